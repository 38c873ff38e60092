"""What a careful new user tried in the workspace, in a real browser: reloads that lose no pair,
a stale second tab that cannot change a judgment, a skip that resets the strength, Esc on the
guidelines, an empty sign-in, a paused annotator, and unknown API addresses."""

from __future__ import annotations

import pytest

from annotate.models import Assignment, Judgment, Membership
from tests.e2e.conftest import PASSWORD, judge_until_empty, login
from tests.e2e.test_annotator import _answers, _pairs

pytestmark = pytest.mark.django_db(transaction=True)


def shown_comparison(page) -> int:
    page.locator("main.pair").wait_for()
    assignment = int(page.locator("main.pair").get_attribute("data-assignment"))
    return Assignment.objects.get(pk=assignment).comparison_id


def read_then_press(page, project, key: str) -> None:
    page.wait_for_timeout(project.min_view_ms + 100)
    page.keyboard.press(key)


def test_reloads_lose_no_pair_and_a_stale_tab_cannot_judge_again(page, project, e2e_annotator):
    comparisons = _pairs(project, [_answers(i) for i in range(3)])
    login(page, "alice", then=f"/app/annotate/{project.pk}")
    first = shown_comparison(page)
    for _ in range(3):  # each reload releases the leases; they must come back to alice
        page.reload()
        assert shown_comparison(page) == first

    stale = page.context.new_page()  # a second tab of the same session: the same live pair
    stale.goto(f"/app/annotate/{project.pk}")
    assert shown_comparison(stale) == first
    read_then_press(page, project, "1")
    page.wait_for_function(
        "id => document.querySelector('main.pair')?.dataset.assignment !== String(id)",
        arg=Assignment.objects.get(comparison_id=first, annotator=e2e_annotator).pk,
    )
    read_then_press(stale, project, "2")
    stale.get_by_text("You already judged this pair").wait_for()
    stored = Judgment.objects.get(comparison_id=first, annotator=e2e_annotator)
    assert stored.choice == "left"
    stale.close()

    # Every pair is still there to judge: nothing was lost to the reloads.
    assert judge_until_empty(page, "3", project.min_view_ms) == len(comparisons) - 1
    judged = Judgment.objects.filter(annotator=e2e_annotator)
    assert set(judged.values_list("comparison_id", flat=True)) == {c.pk for c in comparisons}


def test_a_skip_resets_the_strength_for_the_next_pair(page, project, e2e_annotator):
    _pairs(project, [_answers(i) for i in range(2)])
    login(page, "alice", then=f"/app/annotate/{project.pk}")
    skipped = shown_comparison(page)
    page.keyboard.press("q")  # slight, then skip: the next pair starts from the default
    page.keyboard.press("s")
    page.wait_for_function(
        "id => document.querySelector('main.pair')?.dataset.assignment !== String(id)",
        arg=Assignment.objects.get(comparison_id=skipped, annotator=e2e_annotator).pk,
    )
    judged = shown_comparison(page)
    read_then_press(page, project, "ArrowRight")
    page.get_by_text("Nothing left to judge").wait_for()
    judgment = Judgment.objects.get(annotator=e2e_annotator)
    assert judgment.comparison_id == judged
    assert (judgment.choice, judgment.strength) == ("right", "clear")


def test_esc_closes_the_guidelines_and_sign_in_errors_read_as_sentences(
    page, project, e2e_annotator
):
    project.guidelines = "Prefer the **shorter** answer when both are right."
    project.save()
    _pairs(project, [_answers(0)])
    page.goto(f"/app/annotate/{project.pk}")
    page.get_by_label("Username").wait_for()
    page.keyboard.press("Enter")  # nothing typed
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "object Object" not in alert.inner_text()
    assert "username" in alert.inner_text().lower()

    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.locator("main.pair").wait_for()
    page.keyboard.press("g")
    guidelines = page.get_by_role("complementary", name="Guidelines")
    guidelines.get_by_text("shorter").wait_for()
    page.keyboard.press("Escape")
    guidelines.wait_for(state="detached")

    unknown = page.request.get("/api/no-such-thing/")
    assert unknown.status == 404
    assert "error" in unknown.json()  # the API's error shape, not a page listing every URL


def test_a_paused_annotator_sees_one_message_that_says_why(page, project, e2e_annotator):
    _pairs(project, [_answers(0)])
    Membership.objects.filter(user=e2e_annotator, project=project).update(paused=True)
    login(page, "alice", then=f"/app/annotate/{project.pk}")
    alerts = page.get_by_role("alert")
    alerts.first.wait_for()
    page.wait_for_timeout(300)
    assert alerts.count() == 1
    assert "paused" in alerts.first.inner_text().lower()

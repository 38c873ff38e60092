"""An annotator judges with the keyboard; hostile answers render as text; admin pages stay shut."""

from __future__ import annotations

import pytest

from annotate.models import Judgment
from annotate.services import round_open
from tests.e2e.conftest import login
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db(transaction=True)


CHAT = [
    {"role": "system", "content": "You are a concise Python tutor."},
    {"role": "user", "content": "How do I square the numbers 0 to 9?"},
    {"role": "assistant", "content": "Into a list, or printed one by one?"},
    {"role": "user", "content": "A list, please."},
]


def _pairs(project, texts: list[tuple[str, str]], *, chat_first: bool = False):
    round_ = round_open(project=project)
    comparisons = []
    for i, (a, b) in enumerate(texts):
        if chat_first and i == 0:
            prompt = PromptFactory(project=project, text="", messages=CHAT)
        else:
            prompt = PromptFactory(project=project, text=f"Question {i}: which answer is better?")
        comparisons.append(
            ComparisonFactory(
                prompt=prompt,
                round=round_,
                response_a=ResponseFactory(prompt=prompt, text=a),
                response_b=ResponseFactory(prompt=prompt, text=b),
            )
        )
    return comparisons


def _answers(i: int) -> tuple[str, str]:
    return (
        f"Answer A{i} uses a list comprehension:\n\n```python\n"
        "squares = [n * n for n in range(10)]\nprint(squares)\n```\n\nShort and **fast**.",
        f"Answer B{i} builds it in a loop:\n\n```python\nsquares = []\n"
        "for n in range(10):\n    squares.append(n * n)\n```\n\n- works\n- but longer",
    )


def _side_texts(page) -> tuple[int, str, str]:
    pair = page.locator("main.pair")
    assignment = int(pair.get_attribute("data-assignment"))
    left = page.locator('[data-side="left"] .markdown').inner_text().strip()
    right = page.locator('[data-side="right"] .markdown').inner_text().strip()
    return assignment, left, right


def _check_narrow_screen(page, screenshot_dir) -> None:
    """On a phone-sized screen the answers stack instead of squeezing side by side."""
    page.set_viewport_size({"width": 390, "height": 844})
    left = page.locator('[data-side="left"]').bounding_box()
    right = page.locator('[data-side="right"]').bounding_box()
    assert right["y"] >= left["y"] + left["height"] - 1
    assert left["width"] > 300
    page.screenshot(path=str(screenshot_dir / "workspace-narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 860})


def test_annotator_judges_three_pairs_with_the_keyboard_and_sides_are_recorded(
    page, project, e2e_annotator, screenshot_dir
):
    _pairs(project, [_answers(i) for i in range(3)], chat_first=True)
    login(page, "alice", then=f"/app/annotate/{project.pk}")

    keys = [("e", "1", "left"), ("q", "2", "right"), (None, "3", "tie")]
    shown: dict[int, tuple[str, str, str]] = {}
    for i, (strength_key, choice_key, choice) in enumerate(keys):
        page.locator("main.pair").wait_for()
        assignment, left, right = _side_texts(page)
        assert assignment not in shown
        shown[assignment] = (left, right, choice)
        if i == 0:
            assert page.get_by_label("Conversation").get_by_role("listitem").count() == 4
            assert page.locator(".answers pre code.hljs").count() == 2  # highlighted code
            page.screenshot(path=str(screenshot_dir / "workspace.png"))
            _check_narrow_screen(page, screenshot_dir)
        if strength_key:
            page.keyboard.press(strength_key)
        if i == 0:
            # At once, a choice key judges nothing (the project's min_view_ms) and says so.
            page.keyboard.press(choice_key)
            page.get_by_text("Too fast: read both answers first").wait_for()
            assert not Judgment.objects.filter(annotator=e2e_annotator).exists()
        page.wait_for_timeout(project.min_view_ms + 100)
        page.keyboard.press(choice_key)
        if i < 2:  # the prefetched pair replaces it
            page.wait_for_function(
                "id => document.querySelector('main.pair')?.dataset.assignment !== String(id)",
                arg=assignment,
            )
    page.get_by_text("Nothing left to judge").wait_for()
    assert page.get_by_test_id("judged-today").inner_text() == "3"

    judgments = Judgment.objects.select_related(
        "assignment", "left_response", "right_response", "comparison"
    ).filter(annotator=e2e_annotator)
    assert judgments.count() == 3
    for judgment in judgments:
        left, right, choice = shown[judgment.assignment_id]
        # What the annotator saw on each side is what the judgment records on that side...
        assert left.startswith(judgment.left_response.text.splitlines()[0])
        assert right.startswith(judgment.right_response.text.splitlines()[0])
        assert judgment.choice == choice
        # ...and it matches the side order drawn at random for that assignment.
        comparison = judgment.comparison
        expected_left = (
            comparison.response_a_id if judgment.assignment.a_on_left else comparison.response_b_id
        )
        assert judgment.left_response_id == expected_left
    strengths = {j.choice: j.strength for j in judgments}
    assert strengths == {"left": "strong", "right": "slight", "tie": None}


def test_hostile_markup_in_an_answer_renders_as_text_and_runs_nothing(page, project, e2e_annotator):
    hostile = (
        "<script>alert('script ran')</script>\n\n"
        "<img src=x onerror=\"alert('img ran')\">\n\n"
        "[click me](javascript:alert('link ran'))"
    )
    _pairs(project, [(hostile, hostile)])
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: dialogs.append(f"page error: {error}"))
    login(page, "alice", then=f"/app/annotate/{project.pk}")

    left = page.locator('[data-side="left"]')
    left.get_by_text("<script>alert('script ran')</script>").wait_for()
    assert left.get_by_text("onerror").count() == 1  # the tag shows as text
    assert page.locator(".answers img, .answers script").count() == 0
    link = left.get_by_text("click me")
    assert "javascript" not in (link.get_attribute("href") or "")
    link.click()
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0


def test_an_annotator_cannot_open_an_admin_page(page, project, e2e_annotator):
    login(page, "alice", then=f"/app/admin/{project.pk}/training")
    page.get_by_text("This page is for admins only.").wait_for()
    assert page.get_by_text("Training runs").count() == 0
    assert page.get_by_role("link", name="Dashboard").count() == 0
    response = page.request.get("/api/web/users/")
    assert response.status == 403

"""An annotator rates each of two answers on its own, with the keyboard only."""

from __future__ import annotations

import pytest

from annotate.models import Assignment, FeedbackKind, Rating, RatingScale
from annotate.services import round_open
from tests.e2e.conftest import login
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _rating_items(project, count: int) -> None:
    round_ = round_open(project=project)
    for i in range(count):
        prompt = PromptFactory(project=project, text=f"Question {i}: greet a guest.")
        ComparisonFactory(
            prompt=prompt,
            round=round_,
            kind=FeedbackKind.RATING,
            response_a=ResponseFactory(prompt=prompt, text=f"Welcome in, guest {i}!"),
            response_b=ResponseFactory(prompt=prompt, text=f"What do you want, {i}?"),
        )


def test_annotator_rates_left_then_right_on_a_seven_point_scale(
    page, project, e2e_annotator, screenshot_dir
):
    project.rating_scale = RatingScale.LIKERT_7
    project.save()
    _rating_items(project, 2)
    login(page, "alice", then=f"/app/annotate/{project.pk}")
    page.locator("main.pair").wait_for()
    assignment = Assignment.objects.get(
        pk=page.locator("main.pair").get_attribute("data-assignment")
    )
    page.get_by_test_id("rating-keys").get_by_text("(excellent)").wait_for()
    page.wait_for_timeout(project.min_view_ms + 100)

    page.keyboard.press("6")
    page.get_by_role("group", name="Rate the left answer").get_by_role(
        "button", name="6", pressed=True
    ).wait_for()
    page.screenshot(path=str(screenshot_dir / "workspace-rating.png"))
    with page.expect_response(lambda r: r.url.endswith("/submit/")) as submitted:
        page.keyboard.press("2")
    assert submitted.value.status == 201, submitted.value.text()

    rating = Rating.objects.get(annotator=e2e_annotator)
    assert (rating.left_score, rating.right_score) == (6, 2)
    expected_left = (
        assignment.comparison.response_a_id
        if assignment.a_on_left
        else assignment.comparison.response_b_id
    )
    assert rating.left_response_id == expected_left
    page.wait_for_function(
        "id => document.querySelector('main.pair')?.dataset.assignment !== String(id)",
        arg=assignment.pk,
    )

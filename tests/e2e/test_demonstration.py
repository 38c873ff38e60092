"""An annotator rewrites one of the two answers shown, with the keyboard only."""

from __future__ import annotations

import pytest

from annotate.models import Assignment, Demonstration, FeedbackKind
from annotate.services import round_open
from tests.e2e.conftest import login
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db(transaction=True)

EDIT = " Then print each square on its own line."


def _demonstrations(project, count: int):
    round_ = round_open(project=project)
    items = []
    for i in range(count):
        prompt = PromptFactory(project=project, text=f"Question {i}: how do I square 0 to 9?")
        items.append(
            ComparisonFactory(
                prompt=prompt,
                round=round_,
                kind=FeedbackKind.DEMONSTRATION,
                response_a=ResponseFactory(prompt=prompt, text=f"Answer A{i}: use a loop."),
                response_b=ResponseFactory(prompt=prompt, text=f"Answer B{i}: use range()."),
            )
        )
    return items


def _response_on_the_right(assignment: Assignment) -> int:
    comparison = assignment.comparison
    return comparison.response_b_id if assignment.a_on_left else comparison.response_a_id


def test_annotator_rewrites_the_right_answer_and_the_workspace_moves_on(
    page, project, e2e_annotator, screenshot_dir
):
    _demonstrations(project, 2)
    login(page, "alice", then=f"/app/annotate/{project.pk}")

    page.locator("main.pair").wait_for()
    assignment_id = page.locator("main.pair").get_attribute("data-assignment")
    right = page.locator('[data-side="right"] .markdown').inner_text().strip()
    editor = page.get_by_role("textbox", name="Your answer")
    page.wait_for_timeout(project.min_view_ms + 100)

    page.keyboard.press("2")  # the right answer, copied in to be rewritten
    page.wait_for_function("document.activeElement?.id === 'demonstration-text'")
    assert editor.input_value() == right
    page.keyboard.type(EDIT)
    page.screenshot(path=str(screenshot_dir / "workspace-demonstration.png"))
    # The next item shows at once and the submit goes out behind it: wait for its answer.
    with page.expect_response(lambda r: r.url.endswith("/submit/")) as submitted:
        page.keyboard.press("Control+Enter")
    assert submitted.value.status == 201, submitted.value.text()

    page.wait_for_function(
        "id => document.querySelector('main.pair')?.dataset.assignment !== id", arg=assignment_id
    )
    assert editor.input_value() == ""  # the next item starts blank
    assignment = Assignment.objects.select_related("comparison").get(pk=assignment_id)
    demonstration = Demonstration.objects.get(annotator=e2e_annotator)
    assert demonstration.assignment_id == assignment.pk
    assert demonstration.comparison_id == assignment.comparison_id
    assert demonstration.text == right + EDIT
    assert demonstration.edited_from_id == _response_on_the_right(assignment)
    assert demonstration.time_spent_ms >= project.min_view_ms

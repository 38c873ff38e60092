"""An annotator ranks three answers with the keyboard only, one tie included."""

from __future__ import annotations

import pytest

from annotate.models import ComparisonAnswer, FeedbackKind, Ranking
from annotate.services import round_open
from tests.e2e.conftest import login
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db(transaction=True)

TEXTS = ["Paris is the capital.", "It is Paris, on the Seine.", "Lyon."]


def _ranking_item(project):
    round_ = round_open(project=project)
    prompt = PromptFactory(project=project, text="What is the capital of France?")
    answers = [ResponseFactory(prompt=prompt, round=round_, text=text) for text in TEXTS]
    item = ComparisonFactory(
        prompt=prompt,
        round=round_,
        kind=FeedbackKind.RANKING,
        response_a=answers[0],
        response_b=answers[1],
    )
    for position, answer in enumerate(answers):
        ComparisonAnswer.objects.create(comparison=item, response=answer, position=position)
    return item, answers


def test_annotator_ranks_three_answers_with_the_keys(page, project, e2e_annotator, screenshot_dir):
    project.ranking_size = 3
    project.save()
    item, answers = _ranking_item(project)
    login(page, "alice", then=f"/app/annotate/{project.pk}")

    page.locator(".ranking").wait_for()
    shown = [page.locator(f'[data-answer="{n}"] .markdown').inner_text().strip() for n in (1, 2, 3)]
    assert sorted(shown) == sorted(TEXTS)
    page.wait_for_timeout(project.min_view_ms + 100)

    # The two Paris answers tie for best, Lyon last: press their numbers best first.
    first, second = (shown.index(TEXTS[0]) + 1, shown.index(TEXTS[1]) + 1)
    page.keyboard.press(str(first))
    page.keyboard.press("=")
    page.keyboard.press(str(second))
    page.keyboard.press(str(shown.index(TEXTS[2]) + 1))
    page.screenshot(path=str(screenshot_dir / "workspace-ranking.png"))
    with page.expect_response(lambda r: r.url.endswith("/submit/")) as submitted:
        page.keyboard.press("Enter")
    assert submitted.value.status == 201, submitted.value.text()

    ranking = Ranking.objects.get(annotator=e2e_annotator)
    assert ranking.comparison_id == item.pk
    assert ranking.ranks == {str(answers[0].pk): 1, str(answers[1].pk): 1, str(answers[2].pk): 3}
    page.get_by_text("Nothing left to judge").wait_for()

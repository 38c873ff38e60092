"""Strange submits of every feedback kind are 4xx answers in the API's error shape and store
nothing; a kind that does not match the item is refused, whichever way round."""

from __future__ import annotations

import pytest

from annotate.models import (
    Comparison,
    Demonstration,
    FeedbackKind,
    Judgment,
    Ranking,
    Rating,
)
from annotate.services import assignment_lease_next
from tests.annotate.test_judging import annotators, make_round
from tests.annotate.test_review_views import client_for

pytestmark = pytest.mark.django_db

BAD_BODIES = {
    FeedbackKind.PAIRWISE: [
        {"choice": "middle"},
        {"choice": "tie", "strength": "strong"},
        {"choice": ["left"]},
        {"kind": "rating", "left_score": 7, "right_score": 1},  # the item is a pair
    ],
    FeedbackKind.DEMONSTRATION: [
        {"kind": "demonstration"},
        {"kind": "demonstration", "text": ""},
        {"kind": "demonstration", "text": "ok", "edited_from": "middle"},
        {"kind": "demonstration", "text": {"nested": "object"}},
        {"kind": "demonstration", "text": "x" * 100_001},
        {"kind": "pairwise", "choice": "left"},
    ],
    FeedbackKind.RATING: [
        {"kind": "rating", "left_score": 7},
        {"kind": "rating", "left_score": 0, "right_score": 7},
        {"kind": "rating", "left_score": "seven", "right_score": 7},
        {"kind": "rating", "left_score": 4, "right_score": 7},  # thumbs: 1 or 7 only
        {"kind": "rating", "left_score": 2**70, "right_score": 1},
    ],
    FeedbackKind.RANKING: [
        {"kind": "ranking", "ranks": [1, 2]},
        {"kind": "ranking", "ranks": [1, 2, 9]},
        {"kind": "ranking", "ranks": "1,2,3"},
        {"kind": "ranking", "ranks": [1, 2, 3, 4, 5, 6, 7]},
        {"kind": "ranking"},
    ],
    "nonsense": [{"kind": "telepathy", "thought": "left"}],
}


def item_of_kind(project, kind: str):
    project.ranking_size = 3
    project.save()
    make_round(project, prompts=1)
    comparison = Comparison.objects.get(project=project)
    if kind != "nonsense":
        comparison.kind = kind
        comparison.save()
    if kind == FeedbackKind.RANKING:
        from annotate.models import ComparisonAnswer
        from tests.factories import ResponseFactory

        third = ResponseFactory(prompt=comparison.prompt, round=comparison.round)
        for position, response in enumerate([comparison.response_a, comparison.response_b, third]):
            ComparisonAnswer.objects.create(
                comparison=comparison, response=response, position=position
            )
    return comparison


@pytest.mark.parametrize(
    ("kind", "body"), [(kind, body) for kind, bodies in BAD_BODIES.items() for body in bodies]
)
def test_a_bad_submit_is_a_4xx_and_stores_nothing(project, kind, body):
    item_of_kind(project, kind)
    (annotator,) = annotators(project, 1)
    lease = assignment_lease_next(project=project, annotator=annotator)
    response = client_for(annotator).post(
        f"/api/assignments/{lease.pk}/submit/", body, format="json"
    )
    assert 400 <= response.status_code < 500, response.content
    assert "error" in response.json() and "detail" in response.json()
    for stored in (Judgment, Demonstration, Rating, Ranking):
        assert not stored.objects.exists()
    assert Comparison.objects.get().judgment_count == 0

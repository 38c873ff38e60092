"""Feedback types: what the judging queue collects, by kind (see base.FeedbackType)."""

from __future__ import annotations

from collections.abc import Iterator

from annotate.crowd import CrowdLabels
from annotate.feedback import pairwise, ranking
from annotate.feedback.base import FeedbackType, JudgmentFacts, LeasedItem
from annotate.feedback.demonstration import Demonstrations
from annotate.feedback.pairwise import Pairwise, ResolvedPair
from annotate.feedback.ranking import Rankings
from annotate.feedback.rating import Ratings
from annotate.models import FeedbackKind, Project
from config.errors import ApplicationError

FEEDBACK_TYPES: dict[str, FeedbackType] = {
    FeedbackKind.PAIRWISE: Pairwise(),
    FeedbackKind.DEMONSTRATION: Demonstrations(),
    FeedbackKind.RATING: Ratings(),
    FeedbackKind.RANKING: Rankings(),
}

__all__ = [
    "FEEDBACK_TYPES",
    "FeedbackType",
    "JudgmentFacts",
    "LeasedItem",
    "ResolvedPair",
    "feedback_type",
    "resolved_pairs",
]


def feedback_type(kind: str) -> FeedbackType:
    found = FEEDBACK_TYPES.get(kind)
    if found is None:
        raise ApplicationError(f"kind must be one of {', '.join(FEEDBACK_TYPES)}.")
    return found


def resolved_pairs(
    *,
    project: Project,
    include_ties: bool = False,
    crowd: CrowdLabels | None = None,
) -> Iterator[ResolvedPair]:
    """Every labelled pair the project's feedback resolves to, streamed: the complete pairwise
    items (pairwise.resolved_pairs), then the pairs of each complete ranking item's
    ranked-pairs consensus (ranking.resolved_ranking_pairs, `selection["feedback"] ==
    "ranking"`); both by majority, or labelled and weighed by the crowd model's `crowd`."""
    yield from pairwise.resolved_pairs(
        project=project,
        include_ties=include_ties,
        posterior_a=crowd.comparisons if crowd is not None else None,
    )
    yield from ranking.resolved_ranking_pairs(
        project=project,
        include_ties=include_ties,
        posterior=crowd.ranked if crowd is not None else None,
    )

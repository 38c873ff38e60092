"""Feedback types: what the judging queue collects, by kind (see base.FeedbackType)."""

from __future__ import annotations

from annotate.feedback.base import FeedbackType, JudgmentFacts, LeasedItem
from annotate.feedback.demonstration import Demonstrations
from annotate.feedback.pairwise import Pairwise
from annotate.models import FeedbackKind
from config.errors import ApplicationError

FEEDBACK_TYPES: dict[str, FeedbackType] = {
    FeedbackKind.PAIRWISE: Pairwise(),
    FeedbackKind.DEMONSTRATION: Demonstrations(),
}

__all__ = ["FEEDBACK_TYPES", "FeedbackType", "JudgmentFacts", "LeasedItem", "feedback_type"]


def feedback_type(kind: str) -> FeedbackType:
    found = FEEDBACK_TYPES.get(kind)
    if found is None:
        raise ApplicationError(f"kind must be one of {', '.join(FEEDBACK_TYPES)}.")
    return found

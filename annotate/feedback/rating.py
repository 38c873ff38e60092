"""Ratings: each of the item's two answers rated on its own, thumbs up / down or 1 to 7.

The item is a comparison of kind "rating", shown as a pairwise one (two answers on random
sides); the annotator rates each answer without being asked which is better. A thumbs rating
is stored on the 1-7 scale's ends (models.THUMBS_DOWN / THUMBS_UP), so one threshold (KTO's
desirable_score) reads both scales. Every rated answer is one KTO example (rated_answers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rest_framework import serializers

from annotate import queue
from annotate.feedback.base import JudgmentFacts, Stored
from annotate.feedback.pairwise import prompt_messages, side_by_side_view
from annotate.models import (
    THUMBS_DOWN,
    THUMBS_UP,
    Comparison,
    FeedbackKind,
    Project,
    Rating,
    RatingScale,
)
from annotate.queue import LeasedItem
from config.errors import ApplicationError
from config.users import User
from config.validation import BoundedIntegerField


class RatingSubmitInput(serializers.Serializer[Any]):
    left_score = BoundedIntegerField(
        min_value=1, max_value=7, help_text="The left answer: 1-7, or 1 / 7 for thumbs down / up."
    )
    right_score = BoundedIntegerField(min_value=1, max_value=7, help_text="The right answer.")
    time_spent_ms = BoundedIntegerField(required=False, min_value=0, max_value=86_400_000)


def check_scores_fit(scale: str, *scores: int) -> None:
    if scale == RatingScale.THUMBS and any(s not in (THUMBS_DOWN, THUMBS_UP) for s in scores):
        raise ApplicationError(
            f"This project rates with thumbs: each score is {THUMBS_DOWN} (down) "
            f"or {THUMBS_UP} (up)."
        )


class Ratings:
    kind = FeedbackKind.RATING
    submit_input = RatingSubmitInput

    def check(self, values: Mapping[str, Any]) -> None:
        for side in ("left_score", "right_score"):
            if not 1 <= int(values[side]) <= 7:
                raise ApplicationError(f"{side} must be from 1 to 7.")

    def annotator_view(self, item: LeasedItem) -> dict[str, Any]:
        scale = Project.objects.values_list("rating_scale", flat=True).get(pk=item.project_id)
        return {**side_by_side_view(item), "rating_scale": scale}

    def store_in_one_statement(
        self,
        *,
        assignment_id: int,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Stored | None:
        return None  # the checked path: it knows the project's scale

    def store(
        self,
        *,
        lease: queue.LeaseToSubmit,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Rating:
        scale = Project.objects.values_list("rating_scale", flat=True).get(pk=lease.project_id)
        check_scores_fit(scale, values["left_score"], values["right_score"])
        left, right = (
            (lease.response_a_id, lease.response_b_id)
            if lease.a_on_left
            else (lease.response_b_id, lease.response_a_id)
        )
        rating = Rating(
            comparison_id=lease.comparison_id,
            annotator=annotator,
            assignment_id=lease.assignment_id,
            scale=scale,
            left_response_id=left,
            right_response_id=right,
            left_score=values["left_score"],
            right_score=values["right_score"],
            time_spent_ms=values.get("time_spent_ms"),
            source=values["source"],
            submission_key=key,
            created_at=now,
        )
        rating.save()
        return rating

    def stored_by(self, *, comparison_id: int, annotator: User) -> Rating | None:
        return Rating.objects.filter(comparison_id=comparison_id, annotator=annotator).first()

    def key_used(self, key: uuid.UUID) -> bool:
        return Rating.objects.filter(submission_key=key).exists()

    def submitted_view(self, stored: Any) -> dict[str, Any]:
        return {
            "id": stored.pk,
            "kind": self.kind,
            "comparison": stored.comparison_id,
            "annotator": stored.annotator_id,
            "scale": stored.scale,
            "left_response": stored.left_response_id,
            "right_response": stored.right_response_id,
            "left_score": stored.left_score,
            "right_score": stored.right_score,
            "time_spent_ms": stored.time_spent_ms,
            "source": stored.source,
            "submission_key": str(stored.submission_key),
            "created_at": stored.created_at,
        }

    def differs(self, stored: Any, values: Mapping[str, Any]) -> str | None:
        same = (stored.left_score, stored.right_score) == (
            values["left_score"],
            values["right_score"],
        )
        return None if same else f"left {stored.left_score}, right {stored.right_score}"

    def label(self, judgment: JudgmentFacts) -> str:
        return "rating"  # two scores, not one nominal label


# --- rated answers: one typed read for exports and training -------------------------------


@dataclass(frozen=True)
class RatedAnswer:
    """One answer as one annotator rated it."""

    rating_id: int
    comparison_id: int
    prompt_id: int
    round_id: int | None
    prompt: list[dict[str, str]]  # chat messages, TRL's conversational shape
    completion: str
    score: int  # 1-7; thumbs down / up are 1 / 7
    scale: str


def rated_answers(*, project: Project, round_id: int | None = None) -> Iterator[RatedAnswer]:
    """Every rated answer of the project (or of one round), two per rating, in id order."""
    ratings = (
        Rating.objects.filter(comparison__project=project)
        .select_related("comparison__prompt", "left_response", "right_response")
        .order_by("id")
    )
    if round_id is not None:
        ratings = ratings.filter(comparison__round_id=round_id)
    for rating in ratings.iterator(chunk_size=500):
        comparison: Comparison = rating.comparison
        for response, score in (
            (rating.left_response, rating.left_score),
            (rating.right_response, rating.right_score),
        ):
            yield RatedAnswer(
                rating_id=rating.pk,
                comparison_id=comparison.pk,
                prompt_id=comparison.prompt_id,
                round_id=comparison.round_id,
                prompt=prompt_messages(comparison.prompt),
                completion=response.text,
                score=score,
                scale=rating.scale,
            )

"""Demonstrations: the annotator writes the answer, or rewrites one of the two shown.

The item is a comparison of kind "demonstration": the prompt and two answers by the current
policy, on random sides as for pairwise. A submit carries the written text and, when the
annotator started from one of the answers, which side (`edited_from`); the stored row keeps
the Response it came from, so its model version says which policy wrote the original. Where
the project asks for review, a demonstration waits for a second annotator's accept or reject
before it trains (ReviewStatus).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rest_framework import serializers

from annotate import queue
from annotate.feedback.base import JudgmentFacts, Stored
from annotate.feedback.pairwise import prompt_messages, side_by_side_view
from annotate.models import Comparison, Demonstration, FeedbackKind, Project, ReviewStatus
from annotate.queue import LeasedItem
from config.errors import ApplicationError
from config.users import User
from config.validation import BoundedIntegerField

MAX_DEMONSTRATION_CHARS = 100_000
SIDES = ("left", "right")


class DemonstrationSubmitInput(serializers.Serializer[Any]):
    text = serializers.CharField(
        max_length=MAX_DEMONSTRATION_CHARS,
        trim_whitespace=False,
        help_text="The answer as the annotator wrote it.",
    )
    edited_from = serializers.ChoiceField(
        choices=SIDES,
        required=False,
        allow_null=True,
        help_text="The side of the answer the text was edited from; null when written anew.",
    )
    time_spent_ms = BoundedIntegerField(required=False, min_value=0, max_value=86_400_000)


class Demonstrations:
    kind = FeedbackKind.DEMONSTRATION
    submit_input = DemonstrationSubmitInput

    def check(self, values: Mapping[str, Any]) -> None:
        if not str(values.get("text", "")).strip():
            raise ApplicationError("text must not be empty: write the answer you would give.")
        if values.get("edited_from") not in (None, *SIDES):
            raise ApplicationError("edited_from must be left, right or null.")

    def annotator_view(self, item: LeasedItem) -> dict[str, Any]:
        return side_by_side_view(item)

    def store_in_one_statement(
        self,
        *,
        assignment_id: int,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Stored | None:
        return None  # a demonstration takes seconds to minutes to write: the checked path

    def store(
        self,
        *,
        lease: queue.LeaseToSubmit,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Demonstration:
        side = values.get("edited_from")
        on_left, on_right = (
            (lease.response_a_id, lease.response_b_id)
            if lease.a_on_left
            else (lease.response_b_id, lease.response_a_id)
        )
        edited_from = {"left": on_left, "right": on_right}.get(side) if side else None
        reviewed = Project.objects.filter(pk=lease.project_id, review_demonstrations=True)
        demonstration = Demonstration(
            project_id=lease.project_id,
            prompt_id=Comparison.objects.values_list("prompt_id", flat=True).get(
                pk=lease.comparison_id
            ),
            comparison_id=lease.comparison_id,
            annotator=annotator,
            assignment_id=lease.assignment_id,
            text=values["text"],
            edited_from_id=edited_from,
            time_spent_ms=values.get("time_spent_ms"),
            source=values["source"],
            review_status=ReviewStatus.PENDING if reviewed.exists() else ReviewStatus.ACCEPTED,
            submission_key=key,
            created_at=now,
        )
        demonstration.save()
        return demonstration

    def stored_by(self, *, comparison_id: int, annotator: User) -> Demonstration | None:
        mine = Demonstration.objects.filter(comparison_id=comparison_id, annotator=annotator)
        return mine.first()

    def key_used(self, key: uuid.UUID) -> bool:
        return Demonstration.objects.filter(submission_key=key).exists()

    def submitted_view(self, stored: Any) -> dict[str, Any]:
        return {
            "id": stored.pk,
            "kind": self.kind,
            "comparison": stored.comparison_id,
            "annotator": stored.annotator_id,
            "text": stored.text,
            "edited_from": stored.edited_from_id,
            "review_status": stored.review_status,
            "time_spent_ms": stored.time_spent_ms,
            "source": stored.source,
            "submission_key": str(stored.submission_key),
            "created_at": stored.created_at,
        }

    def differs(self, stored: Any, values: Mapping[str, Any]) -> str | None:
        return None if stored.text == values["text"] else "another answer"

    def label(self, judgment: JudgmentFacts) -> str:
        return "demonstration"  # written answers have no nominal label to agree on


# --- accepted demonstrations: one typed read for exports and training ---------------------


@dataclass(frozen=True)
class AcceptedDemonstration:
    """A demonstration that may train: accepted (or written where no review is asked)."""

    demonstration_id: int
    prompt_id: int
    round_id: int | None
    prompt: list[dict[str, str]]  # chat messages, TRL's conversational shape
    completion: str
    edited_from: int | None  # the Response it was rewritten from
    source: str


def accepted_demonstrations(
    *, project: Project, exclude_ids: Collection[int] = ()
) -> Iterator[AcceptedDemonstration]:
    """Every accepted demonstration of the project in id order, but those in `exclude_ids`
    (what an earlier SFT version already trained on)."""
    rows = (
        Demonstration.objects.filter(project=project, review_status=ReviewStatus.ACCEPTED)
        .exclude(pk__in=list(exclude_ids))
        .select_related("prompt", "comparison")
        .order_by("id")
    )
    for row in rows.iterator(chunk_size=500):
        yield AcceptedDemonstration(
            demonstration_id=row.pk,
            prompt_id=row.prompt_id,
            round_id=row.comparison.round_id if row.comparison else None,
            prompt=prompt_messages(row.prompt),
            completion=row.text,
            edited_from=row.edited_from_id,
            source=row.source,
        )

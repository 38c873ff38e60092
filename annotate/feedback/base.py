"""What every feedback type provides to the judging queue, its submit and its resolution.

The queue leases, counts and expires items of any kind alike (annotate.queue); a feedback type
says what an annotator is shown, what a submit carries and how judgments become a label. A new
type is a module beside pairwise.py implementing FeedbackType, its choice in
models.FeedbackKind, its storage, a workspace component and its tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from rest_framework import serializers

from annotate.queue import LeasedItem, LeaseToSubmit
from config.users import User

__all__ = ["FeedbackType", "JudgmentFacts", "LeasedItem", "Stored"]


class Stored(NamedTuple):
    """A judgment a submit wrote, and what the queue must know of its item afterwards."""

    judgment: Any  # the kind's stored row (a Judgment for pairwise)
    pair_status: str  # the item's status after this judgment counted
    project_id: int
    round_id: int | None


class JudgmentFacts(NamedTuple):
    """What resolution reads of one stored judgment, whatever its kind."""

    choice: str
    left_response_id: int | None
    right_response_id: int | None
    response_a_id: int | None


class FeedbackType(Protocol):
    @property
    def kind(self) -> str:
        """Its models.FeedbackKind value, stored on every queued item of the type."""

    @property
    def submit_input(self) -> type[serializers.Serializer[Any]]:
        """The fields a submit of this kind carries (beside submission_key and lease_next)."""

    def check(self, values: Mapping[str, Any]) -> None:
        """Rules across fields the serializer cannot state; raises ApplicationError."""

    def annotator_view(self, item: LeasedItem) -> dict[str, Any]:
        """What the annotator is shown: never which model wrote what, nor a gold flag."""

    def store_in_one_statement(
        self,
        *,
        assignment_id: int,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Stored | None:
        """The common submit in a single statement where the backend allows; None falls back to
        the checked path (and must have written nothing)."""

    def store(
        self,
        *,
        lease: LeaseToSubmit,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Any:
        """Write the judgment of a lease the checked path has locked and counted."""

    def stored_by(self, *, comparison_id: int, annotator: User) -> Any | None:
        """What this annotator already gave on the item, if anything (a retry finds it)."""

    def key_used(self, key: uuid.UUID) -> bool:
        """Whether a stored row of this kind already carries this submission key."""

    def submitted_view(self, stored: Any) -> dict[str, Any]:
        """A stored row as the submit answers it."""

    def label(self, judgment: JudgmentFacts) -> str:
        """The judgment as one nominal label, for agreement statistics and resolution."""

    def differs(self, stored: Any, values: Mapping[str, Any]) -> str | None:
        """None when `values` say what the stored judgment says (a second tab, a retry with a
        new key); else how the stored one reads, for the 409 that refuses the new one."""

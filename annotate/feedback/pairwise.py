"""Pairwise feedback: which of two answers to one prompt is better (or a tie, or both bad).

The screen shows the comparison's answers on random sides (Assignment.a_on_left); a judgment
stores what was pressed (`choice`, in screen terms) and which answer was on which side, so its
label in the comparison's own terms (a / b / tie / both_bad) is always recoverable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Prefetch, QuerySet
from rest_framework import serializers

from annotate import quality, queue
from annotate.feedback.base import JudgmentFacts, Stored
from annotate.models import (
    Assignment,
    AssignmentStatus,
    Choice,
    Comparison,
    ComparisonStatus,
    FeedbackKind,
    Judgment,
    JudgmentSource,
    MemberRole,
    Membership,
    Outcome,
    Project,
    Prompt,
    Strength,
    choice_outcome,
)
from annotate.queue import LeasedItem
from config.db import prepared_cursor
from config.errors import ApplicationError
from config.users import User
from config.validation import BoundedIntegerField

# The judgment columns a pairwise submit writes, in this order, on both submit paths.
STORED_COLUMNS = (
    "comparison_id", "annotator_id", "assignment_id", "choice", "strength", "rationale",
    "time_spent_ms", "left_response_id", "right_response_id", "source", "submission_key",
    "created_at",
)  # fmt: skip
WINNING_CHOICES = (Choice.LEFT, Choice.RIGHT)


class PairwiseSubmitInput(serializers.Serializer[Any]):
    choice = serializers.ChoiceField(choices=Choice.choices)
    strength = serializers.ChoiceField(choices=Strength.choices, required=False, allow_null=True)
    rationale = serializers.CharField(
        required=False, allow_blank=True, max_length=10_000, default=""
    )
    time_spent_ms = BoundedIntegerField(required=False, min_value=0, max_value=86_400_000)


# A judgment as the API shows it; JudgmentOutputSerializer lists the same fields.
JUDGMENT_FIELDS = (
    "id", "comparison", "annotator", "choice", "strength", "rationale", "time_spent_ms",
    "left_response", "right_response", "source", "submission_key", "created_at",
)  # fmt: skip
_JUDGMENT_FOREIGN_KEYS = frozenset({"comparison", "annotator", "left_response", "right_response"})


def judgment_view(judgment: Judgment) -> dict[str, Any]:
    """A judgment in JudgmentOutputSerializer's shape, without a serializer per submit."""
    view = {
        name: getattr(judgment, f"{name}_id" if name in _JUDGMENT_FOREIGN_KEYS else name)
        for name in JUDGMENT_FIELDS
    }
    view["submission_key"] = str(judgment.submission_key)
    return view


def check_choice(choice: str, strength: str | None) -> None:
    if choice not in Choice.values:
        raise ApplicationError(f"choice must be one of {', '.join(Choice.values)}.")
    if strength is not None and strength not in Strength.values:
        raise ApplicationError(f"strength must be one of {', '.join(Strength.values)}.")
    if strength is not None and choice not in WINNING_CHOICES:
        raise ApplicationError("strength applies only when one side wins (left or right).")


def side_by_side_view(item: LeasedItem) -> dict[str, Any]:
    """An item's prompt and its two answers on the lease's sides: what pairwise, demonstration
    and rating items show alike."""
    a, b = item.answer_a, item.answer_b
    left, right = (a, b) if item.a_on_left else (b, a)
    return {
        "assignment_id": item.assignment_id,
        "project_id": item.project_id,
        "kind": item.kind,
        "prompt": {"text": item.prompt_text or None, "messages": item.prompt_messages},
        "left": {"text": left},
        "right": {"text": right},
        "leased_at": item.leased_at,
        "expires_at": item.expires_at,
    }


class Pairwise:
    kind = FeedbackKind.PAIRWISE
    submit_input = PairwiseSubmitInput

    def check(self, values: Mapping[str, Any]) -> None:
        check_choice(values["choice"], values.get("strength"))

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
        if not _submits_in_one_statement():
            return None
        stored_values = _stored_values(values)
        row = _submit_in_one_statement(
            assignment_id=assignment_id,
            annotator_id=annotator.pk,
            now=now,
            fields={**stored_values, "key": key},
        )
        if row is None:
            return None
        judgment_id, pair_status, project_id, round_id, comparison_id, left_id, right_id = row
        judgment = Judgment(
            pk=judgment_id,
            comparison_id=comparison_id,
            annotator=annotator,
            assignment_id=assignment_id,
            left_response_id=left_id,
            right_response_id=right_id,
            submission_key=key,
            created_at=now,
            **stored_values,
        )
        judgment._state.adding = False
        return Stored(judgment, pair_status, project_id, round_id)

    def store(
        self,
        *,
        lease: queue.LeaseToSubmit,
        annotator: User,
        key: uuid.UUID,
        values: Mapping[str, Any],
        now: datetime,
    ) -> Judgment:
        left, right = (
            (lease.response_a_id, lease.response_b_id)
            if lease.a_on_left
            else (lease.response_b_id, lease.response_a_id)
        )
        judgment = Judgment(
            comparison_id=lease.comparison_id,
            annotator=annotator,
            assignment_id=lease.assignment_id,
            left_response_id=left,
            right_response_id=right,
            submission_key=key,
            created_at=now,
            **_stored_values(values),
        )
        queue.insert_row(judgment, STORED_COLUMNS)
        return judgment

    def stored_by(self, *, comparison_id: int, annotator: User) -> Judgment | None:
        return Judgment.objects.filter(comparison_id=comparison_id, annotator=annotator).first()

    def key_used(self, key: uuid.UUID) -> bool:
        return Judgment.objects.filter(submission_key=key).exists()

    def submitted_view(self, stored: Any) -> dict[str, Any]:
        return judgment_view(stored)

    def differs(self, stored: Any, values: Mapping[str, Any]) -> str | None:
        same = stored.choice == values["choice"] and stored.strength == values.get("strength")
        if same:
            return None
        said = stored.choice.replace("_", " ")
        return f"{said}, {stored.strength}" if stored.strength else said

    def label(self, judgment: JudgmentFacts) -> str:
        assert judgment.response_a_id is not None  # a pairwise item always has both answers
        return choice_outcome(
            judgment.choice,
            judgment.left_response_id,
            judgment.right_response_id,
            judgment.response_a_id,
        )


def _stored_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "choice": values["choice"],
        "strength": values.get("strength"),
        "rationale": values.get("rationale", ""),
        "time_spent_ms": values.get("time_spent_ms"),
        "source": values["source"],
    }


# --- the submit in one statement (PostgreSQL) ---------------------------------------------


def _submits_in_one_statement() -> bool:
    """PostgreSQL can lock, count, insert and mark a submit in one statement (SQLite cannot)."""
    return connection.vendor == "postgresql"


@cache
def _one_statement_submit_sql() -> str:
    assignments, comparisons = queue.table(Assignment), queue.table(Comparison)
    # Each write feeds the next, so nothing is written unless all of it is: `counted` only if
    # the lease may still be judged and the pair has room, `stored` only if counted, `marked`
    # only if stored. The row lock in `lease` queues submits on one pair; the UPDATE's own
    # condition is rechecked on the newest row version, so the count never passes the overlap.
    # Only a member who judges (the annotator role) gets past `lease`; anyone else falls to the
    # checked path, which says why.
    return f"""
    WITH lease AS (
        SELECT a.id AS assignment_id, a.status, c.id AS comparison_id, c.project_id,
               c.round_id,
               CASE WHEN a.a_on_left THEN c.response_a_id ELSE c.response_b_id END AS left_id,
               CASE WHEN a.a_on_left THEN c.response_b_id ELSE c.response_a_id END AS right_id
        FROM {assignments} a JOIN {comparisons} c ON c.id = a.comparison_id
        JOIN {queue.table(Membership)} m
          ON m.project_id = c.project_id AND m.user_id = a.annotator_id
             AND m.role = %(annotator_role)s
        WHERE a.id = %(assignment)s AND a.annotator_id = %(annotator)s AND c.kind = %(kind)s
        FOR UPDATE OF a, c
    ), counted AS (
        UPDATE {comparisons} c SET
            judgment_count = c.judgment_count + 1,
            status = CASE WHEN c.judgment_count + 1 >= c.required_annotations
                          THEN %(complete)s ELSE c.status END,
            completed_at = CASE WHEN c.judgment_count + 1 >= c.required_annotations
                                THEN %(now)s ELSE c.completed_at END
        FROM lease
        WHERE c.id = lease.comparison_id AND lease.status IN (%(leased)s, %(expired)s)
          AND c.status = %(open)s AND c.judgment_count < c.required_annotations
          AND NOT EXISTS (SELECT 1 FROM {queue.table(Judgment)} used
                          WHERE used.submission_key = %(key)s)
        RETURNING c.status
    ), stored AS (
        INSERT INTO {queue.table(Judgment)} ({", ".join(STORED_COLUMNS)})
        SELECT lease.comparison_id, %(annotator)s, lease.assignment_id,
               CAST(%(choice)s AS varchar), CAST(%(strength)s AS varchar),
               CAST(%(rationale)s AS text), CAST(%(time_spent_ms)s AS integer),
               lease.left_id, lease.right_id, CAST(%(source)s AS varchar),
               CAST(%(key)s AS uuid), CAST(%(now)s AS timestamptz)
        FROM lease, counted
        RETURNING id
    ), marked AS (
        UPDATE {assignments} SET status = %(submitted)s, finished_at = %(now)s
        WHERE id = %(assignment)s AND EXISTS (SELECT 1 FROM stored)
    )
    SELECT stored.id, counted.status, lease.project_id, lease.round_id, lease.comparison_id,
           lease.left_id, lease.right_id
    FROM lease, counted, stored
    """


def _submit_in_one_statement(
    *, assignment_id: int, annotator_id: int, now: datetime, fields: dict[str, Any]
) -> tuple[Any, ...] | None:
    """Store a judgment on a lease that may take it, in one statement; None if it may not.

    None changes nothing: the caller then takes the checked path, which tells a retry, a
    skipped lease or a full pair apart. fields: choice, strength, rationale, time_spent_ms,
    source and key (the submission key).
    """
    params = {
        **fields,
        "assignment": assignment_id,
        "annotator": annotator_id,
        "now": now,
        "leased": AssignmentStatus.LEASED,
        "expired": AssignmentStatus.EXPIRED,
        "submitted": AssignmentStatus.SUBMITTED,
        "open": ComparisonStatus.OPEN,
        "complete": ComparisonStatus.COMPLETE,
        "kind": FeedbackKind.PAIRWISE,
        "annotator_role": MemberRole.ANNOTATOR,
    }
    with prepared_cursor() as cursor:
        cursor.execute(_one_statement_submit_sql(), params)
        row = cursor.fetchone()
    return tuple(row) if row else None


# --- resolved pairs: one typed read for exports and training ------------------------------

EXPORT_CHUNK_SIZE = 500


@dataclass(frozen=True)
class ResolvedPair:
    """A complete comparison whose judgments resolve to a label (annotate.quality.resolve)."""

    comparison_id: int
    prompt_id: int
    round_id: int | None
    prompt: list[dict[str, str]]  # chat messages, TRL's conversational shape
    chosen: str
    rejected: str
    label: str  # a, b or tie (for a tie, chosen is answer a)
    agreement: float  # share of the judgments that voted for the label
    # What the pair weighs in training: the agreement under majority vote; under the crowd
    # model, the posterior probability of the label given every vote and its voter's reliability.
    weight: float
    judgments: int
    # The median strength of the votes for the winner (slight < clear < strong); None for a
    # tie or when none of them gave one.
    strength: str | None
    annotator_ids: tuple[int, ...]  # everyone who judged the pair, in judgment order
    selection: dict[str, Any]  # how the pair was chosen (training.pairing), {} if given

    @property
    def is_tie(self) -> bool:
        return self.label == Outcome.TIE


def consensus_strength(strengths: Iterable[str | None]) -> str | None:
    """The median of the strengths given (the lower middle of an even count: the cautious one);
    None when none was given."""
    order = list(Strength.values)  # slight, clear, strong
    given = sorted(order.index(s) for s in strengths if s)
    return order[given[(len(given) - 1) // 2]] if given else None


def prompt_messages(prompt: Prompt) -> list[dict[str, str]]:
    """A prompt as chat messages, the shape TRL's conversational format expects."""
    if prompt.messages:
        return [{"role": turn["role"], "content": turn["content"]} for turn in prompt.messages]
    return [{"role": "user", "content": prompt.text}]


def _complete_comparisons(project: Project) -> QuerySet[Comparison]:
    judgments = (
        Judgment.objects.only(
            "id", "comparison", "annotator", "choice", "strength", "left_response", "right_response"
        )
        # An AI judgment beside the quota (no lease) is measured against the humans, never
        # part of the label.
        .exclude(source=JudgmentSource.AI, assignment__isnull=True)
        .order_by("id")
    )
    return (
        Comparison.objects.filter(
            project=project, kind=FeedbackKind.PAIRWISE, status=ComparisonStatus.COMPLETE
        )
        .select_related("prompt", "response_a", "response_b")
        # Prefetched per chunk of the iterator: two queries per chunk, not one per pair.
        .prefetch_related(Prefetch("judgments", queryset=judgments))
        .order_by("id")
    )


def _crowd_label(
    labels: list[str], majority: quality.Resolution, p_a: float | None
) -> tuple[str, float] | None:
    """The crowd model's label and its posterior, or None: a tie or "both bad" that most
    judges gave stays as they gave it (the crowd model weighs only decided votes); otherwise
    the posterior decides, a split of two votes included, and an even posterior leaves it out."""
    if majority.label in (Outcome.TIE, Outcome.BOTH_BAD):
        return majority.label, majority.agreement
    if p_a is None or p_a == 0.5 or not any(label in (Outcome.A, Outcome.B) for label in labels):
        return None
    return (Outcome.A, p_a) if p_a > 0.5 else (Outcome.B, 1 - p_a)


def resolved_pairs(
    *,
    project: Project,
    include_ties: bool = False,
    posterior_a: Mapping[int, float] | None = None,
) -> Iterator[ResolvedPair]:
    """Every complete pair whose label is a winner (or a tie, when asked), streamed.

    By majority vote (the default) or, given the crowd model's `posterior_a` (comparison id to
    P(answer a is better)), by the crowd model, which also settles an even split by its voters'
    reliability. Left out: disagreements, "both bad" (neither side won), and pairs whose two
    answers are the same text after trimming (nothing to learn from them). Pairwise items
    only: annotate.feedback.resolved_pairs adds those that ranking items resolve to.
    """
    wanted = {Outcome.A, Outcome.B} | ({Outcome.TIE} if include_ties else set())
    for comparison in _complete_comparisons(project).iterator(chunk_size=EXPORT_CHUNK_SIZE):
        judgments = list(comparison.judgments.all())
        labels = [
            choice_outcome(
                j.choice, j.left_response_id, j.right_response_id, comparison.response_a_id
            )
            for j in judgments
        ]
        resolution = quality.resolve(labels)
        label, weight = resolution.label, resolution.agreement
        if posterior_a is not None:
            crowd = _crowd_label(labels, resolution, posterior_a.get(comparison.pk))
            if crowd is None:
                continue
            label, weight = crowd
        if label not in wanted:
            continue
        a, b = comparison.response_a.text, comparison.response_b.text
        if a.strip() == b.strip():
            continue
        chosen, rejected = (b, a) if label == Outcome.B else (a, b)
        yield ResolvedPair(
            comparison_id=comparison.pk,
            prompt_id=comparison.prompt_id,
            round_id=comparison.round_id,
            prompt=prompt_messages(comparison.prompt),
            chosen=chosen,
            rejected=rejected,
            label=label,
            agreement=sum(given == label for given in labels) / max(len(labels), 1),
            weight=weight,
            judgments=resolution.judgments,
            strength=consensus_strength(
                j.strength for j, given in zip(judgments, labels, strict=True) if given == label
            ),
            annotator_ids=tuple(j.annotator_id for j in judgments),
            selection=comparison.selection,
        )

"""The judging queue's hot statements (leasing and submitting) in hand-written SQL.

Every judgment passes through these statements, under many annotators at once, so they are
written once here instead of being built by the ORM on each request: building the candidate
search through querysets cost more CPU than the database spent running it. Table names come
from the models' metadata; the columns are the models' own. The same SQL runs on PostgreSQL and
SQLite; only PostgreSQL gets row locks (SQLite's write lock serializes instead). On PostgreSQL
each statement is prepared once per connection (config.db).

Nothing here depends on the feedback type: a lease, its expiry and the overlap count are the same
for every kind. What a kind stores, including the pairwise type's single-statement submit, lives
with the type in annotate/feedback/."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import Field, Model

from annotate.models import (
    Assignment,
    AssignmentStatus,
    Comparison,
    ComparisonStatus,
    Membership,
    Project,
    Prompt,
    Response,
    Round,
    RoundStatus,
)
from config.db import prepared_cursor


@cache
def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@cache
def _lock(clause: str) -> str:
    """A row-lock clause where this backend has it (FOR UPDATE [OF ...] [SKIP LOCKED])."""
    features = connection.features
    if not features.has_select_for_update:
        return ""
    if " OF " in clause and not features.has_select_for_update_of:
        return ""
    if "SKIP LOCKED" in clause and not features.has_select_for_update_skip_locked:
        return ""
    return clause


def _db_time(moment: datetime) -> Any:
    """A timestamp as this backend stores it (SQLite compares text)."""
    return connection.ops.adapt_datetimefield_value(moment)


@cache
def _candidate_sql(gold: bool | None, passed: int, lock: bool) -> str:
    gold_filter = {
        None: "",
        True: "AND c.gold_outcome IS NOT NULL",
        False: "AND c.gold_outcome IS NULL",
    }[gold]
    passed_filter = f"AND c.id NOT IN ({', '.join(['%s'] * passed)})" if passed else ""
    # OF c: only the pair is locked, not its round; SKIP LOCKED: a pair another annotator is
    # leasing right now is passed over instead of waited on.
    lock_clause = _lock("FOR UPDATE OF c SKIP LOCKED") if lock else ""
    return f"""
        SELECT c.id, c.judgment_count, c.required_annotations
        FROM {table(Comparison)} c
        LEFT JOIN {table(Round)} r ON r.id = c.round_id
        WHERE c.project_id = %s AND c.status = %s
          AND (c.round_id IS NULL OR r.status = %s)
          AND NOT EXISTS (
              SELECT 1 FROM {table(Assignment)} mine
              WHERE mine.comparison_id = c.id AND mine.annotator_id = %s
                AND mine.status IN (%s, %s, %s))
          AND c.judgment_count + (
              SELECT COUNT(*) FROM {table(Assignment)} live
              WHERE live.comparison_id = c.id AND live.status = %s AND live.expires_at > %s
          ) < c.required_annotations
          {gold_filter} {passed_filter}
        ORDER BY c.priority DESC, c.id
        LIMIT 1 {lock_clause}
    """


@cache
def _insert_fields(model: type[Model], attnames: tuple[str, ...]) -> tuple[Field[Any, Any], ...]:
    fields = tuple(model._meta.get_field(name) for name in attnames)
    concrete = tuple(field for field in fields if isinstance(field, Field) and field.column)
    if len(concrete) != len(fields):
        raise ValueError(f"{model.__name__}: {attnames} are not all concrete columns")
    return concrete


@cache
def _insert_sql(model: type[Model], attnames: tuple[str, ...]) -> str:
    fields = _insert_fields(model, attnames)
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    pk = connection.ops.quote_name(str(model._meta.pk.column))
    return f"INSERT INTO {table(model)} ({columns}) VALUES ({placeholders}) RETURNING {pk}"


def insert_row(instance: Model, attnames: tuple[str, ...]) -> None:
    """INSERT a new model instance's given fields with a prepared statement; sets its pk.

    The hot path's replacement for Model.save(): the values pass through each field's own
    pre_save (auto_now_add) and database preparation, as the ORM's insert would.
    """
    model = type(instance)
    values = [
        field.get_db_prep_save(field.pre_save(instance, add=True), connection)
        for field in _insert_fields(model, attnames)
    ]
    with prepared_cursor() as cursor:
        cursor.execute(_insert_sql(model, attnames), values)
        instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias


class Candidate(NamedTuple):
    id: int
    judgment_count: int
    required_annotations: int


def next_candidate(
    *,
    project_id: int,
    annotator_id: int,
    now: datetime,
    gold: bool | None,
    passed: set[int],
    lock: bool = True,
) -> Candidate | None:
    """The most urgent open pair this annotator has not judged, skipped or leased now, with a
    free slot. A pair they released (a reload, a closed tab) or let expire comes back to them:
    only a skip is final.

    With lock, the pair comes row-locked and pairs locked by others are skipped; without, it is
    only read (to learn whether a busy pair is worth waiting for).
    """
    sql = _candidate_sql(gold, len(passed), lock)
    params = [
        project_id,
        ComparisonStatus.OPEN,
        RoundStatus.OPEN,
        annotator_id,
        AssignmentStatus.LEASED,
        AssignmentStatus.SUBMITTED,
        AssignmentStatus.SKIPPED,
        AssignmentStatus.LEASED,
        _db_time(now),
        *sorted(passed),
    ]
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return Candidate(*row) if row else None


def lock_open_pair(comparison_id: int) -> Candidate | None:
    """Lock one pair, waiting for whoever holds it; None once it is no longer open."""
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT id, judgment_count, required_annotations FROM {table(Comparison)} "
            f"WHERE id = %s AND status = %s {_lock('FOR UPDATE')}",
            [comparison_id, ComparisonStatus.OPEN],
        )
        row = cursor.fetchone()
    return Candidate(*row) if row else None


def live_lease_count(*, comparison_id: int, now: datetime) -> int:
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM {table(Assignment)} "
            "WHERE comparison_id = %s AND status = %s AND expires_at > %s",
            [comparison_id, AssignmentStatus.LEASED, _db_time(now)],
        )
        return int(cursor.fetchone()[0])


class JudgingRights(NamedTuple):
    paused: bool
    role: str
    gold_rate: float


def lock_membership(*, project_id: int, user_id: int) -> JudgingRights | None:
    """Lock the user's membership row and read what judging needs; None if not a member.

    The lock serializes one annotator's concurrent `next` calls (two tabs, a retried request):
    the second waits, then finds the first one's lease instead of taking another.
    """
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT m.paused, m.role, p.gold_rate FROM {table(Membership)} m "
            f"JOIN {table(Project)} p ON p.id = m.project_id "
            f"WHERE m.project_id = %s AND m.user_id = %s {_lock('FOR UPDATE OF m')}",
            [project_id, user_id],
        )
        row = cursor.fetchone()
    return JudgingRights(bool(row[0]), str(row[1]), float(row[2])) if row else None


class LeaseToSubmit(NamedTuple):
    assignment_id: int
    member_role: str | None  # the annotator's role in the project now; None: no longer a member
    kind: str
    status: str
    a_on_left: bool
    comparison_id: int
    project_id: int
    round_id: int | None
    comparison_status: str
    judgment_count: int
    required_annotations: int
    response_a_id: int
    response_b_id: int


def lock_lease_for_submit(*, assignment_id: int, annotator_id: int) -> LeaseToSubmit | None:
    """Lock a lease and its pair: while held, the pair's judgment count read here is exact.

    Submits on one pair queue on the pair's row; leases skip a locked pair rather than wait.
    """
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT a.id, m.role, c.kind, a.status, a.a_on_left, c.id, c.project_id, "
            f"c.round_id, c.status, c.judgment_count, c.required_annotations, c.response_a_id, "
            f"c.response_b_id "
            f"FROM {table(Assignment)} a JOIN {table(Comparison)} c ON c.id = a.comparison_id "
            f"LEFT JOIN {table(Membership)} m "
            f"ON m.project_id = c.project_id AND m.user_id = a.annotator_id "
            f"WHERE a.id = %s AND a.annotator_id = %s {_lock('FOR UPDATE OF a, c')}",
            [assignment_id, annotator_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    lease = LeaseToSubmit(*row)
    return lease._replace(a_on_left=bool(lease.a_on_left))


def count_judgment(lease: LeaseToSubmit, now: datetime) -> str | None:
    """Add one judgment to the locked pair; its new status, or None when it is already full.

    The UPDATE is also conditional on the count read under the lock, so even where there are
    no row locks (SQLite, whose write lock serializes instead) a pair never passes its overlap.
    """
    if (
        lease.comparison_status != ComparisonStatus.OPEN
        or lease.judgment_count >= lease.required_annotations
    ):
        return None
    count = lease.judgment_count + 1
    complete = count == lease.required_annotations
    status = ComparisonStatus.COMPLETE if complete else ComparisonStatus.OPEN
    completed_at = ", completed_at = %s" if complete else ""
    params: list[Any] = [count, status, *([_db_time(now)] if complete else [])]
    with prepared_cursor() as cursor:
        cursor.execute(
            f"UPDATE {table(Comparison)} SET judgment_count = %s, status = %s{completed_at} "
            "WHERE id = %s AND status = %s AND judgment_count = %s",
            [*params, lease.comparison_id, ComparisonStatus.OPEN, lease.judgment_count],
        )
        updated = cursor.rowcount
    return status if updated else None


def mark_lease_submitted(assignment_id: int, now: datetime) -> None:
    with prepared_cursor() as cursor:
        cursor.execute(
            f"UPDATE {table(Assignment)} SET status = %s, finished_at = %s WHERE id = %s",
            [AssignmentStatus.SUBMITTED, _db_time(now), assignment_id],
        )


class RoundProgress(NamedTuple):
    quota: int
    pairs: int
    complete: int


def open_round_progress(round_id: int) -> RoundProgress | None:
    """An open round's quota and pair counts (read after every completed pair); None if closed.

    Two counts on the (round, status) index rather than one pass over the round's pairs.
    """
    comparisons = table(Comparison)
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT r.quota, "
            f"(SELECT COUNT(*) FROM {comparisons} c WHERE c.round_id = r.id), "
            f"(SELECT COUNT(*) FROM {comparisons} c WHERE c.round_id = r.id AND c.status = %s) "
            f"FROM {table(Round)} r WHERE r.id = %s AND r.status = %s",
            [ComparisonStatus.COMPLETE, round_id, RoundStatus.OPEN],
        )
        row = cursor.fetchone()
    return RoundProgress(*(int(value) for value in row)) if row else None


def oldest_live_lease_id(*, project_id: int, annotator_id: int, now: datetime) -> int | None:
    """The lease this annotator already holds in the project, if any (a reloaded page)."""
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT a.id FROM {table(Assignment)} a "
            f"JOIN {table(Comparison)} c ON c.id = a.comparison_id "
            "WHERE a.annotator_id = %s AND c.project_id = %s AND a.status = %s "
            "AND a.expires_at > %s ORDER BY a.leased_at, a.id LIMIT 1",
            [annotator_id, project_id, AssignmentStatus.LEASED, _db_time(now)],
        )
        row = cursor.fetchone()
    return row[0] if row else None


class LeasedItem(NamedTuple):
    """A leased item as the queue reads it, before its type shapes what the annotator sees."""

    assignment_id: int
    project_id: int
    kind: str
    a_on_left: bool
    leased_at: datetime
    expires_at: datetime
    prompt_text: str
    prompt_messages: Any
    answer_a: str | None
    answer_b: str | None


def leased_item(assignment_id: int) -> LeasedItem | None:
    """A leased item as stored: its kind, the prompt and the comparison's answers (a, b).

    Its feedback type turns this into what the annotator sees (annotate.feedback).
    """
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT a.id, c.project_id, c.kind, a.a_on_left, a.leased_at, a.expires_at, "
            f"p.text, p.messages, ra.text, rb.text FROM {table(Assignment)} a "
            f"JOIN {table(Comparison)} c ON c.id = a.comparison_id "
            f"JOIN {table(Prompt)} p ON p.id = c.prompt_id "
            f"LEFT JOIN {table(Response)} ra ON ra.id = c.response_a_id "
            f"LEFT JOIN {table(Response)} rb ON rb.id = c.response_b_id "
            "WHERE a.id = %s",
            [assignment_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    pk, project_id, kind, a_on_left, leased_at, expires_at, text, messages, a, b = row
    return LeasedItem(
        assignment_id=pk,
        project_id=project_id,
        kind=kind,
        a_on_left=bool(a_on_left),
        leased_at=_db_datetime(leased_at),
        expires_at=_db_datetime(expires_at),
        prompt_text=text,
        prompt_messages=_json_value(messages),
        answer_a=a,
        answer_b=b,
    )


def _json_value(raw: Any) -> Any:
    # PostgreSQL's driver decodes jsonb itself; SQLite hands back the stored text.
    return json.loads(raw) if isinstance(raw, str) else raw


def _db_datetime(raw: Any) -> datetime:
    # SQLite hands back naive UTC (or text); PostgreSQL an aware datetime.
    value = datetime.fromisoformat(raw) if isinstance(raw, str) else raw
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value

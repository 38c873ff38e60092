"""Writes for feedback collection. Keyword-only, typed, atomic; views call exactly one of these."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotate import hooks, queue
from annotate.feedback import FEEDBACK_TYPES, FeedbackType, feedback_type
from annotate.feedback.pairwise import check_choice
from annotate.models import (
    Assignment,
    AssignmentStatus,
    Comparison,
    ComparisonAnswer,
    ComparisonStatus,
    Demonstration,
    FeedbackKind,
    Judgment,
    JudgmentSource,
    MemberRole,
    Membership,
    Outcome,
    Project,
    Prompt,
    Response,
    ResponseSource,
    ReviewStatus,
    Round,
    RoundStatus,
    TrainingAlgorithm,
)
from audit.models import AuditAction
from audit.services import audit_record
from config.errors import ApplicationError, ConflictError, NotFoundError
from config.safe_json import json_loads_checked
from config.users import User
from config.validation import too_large
from registry.selectors import active_policy
from registry.services import base_policy_create

CHAT_ROLES = ("system", "user", "assistant")


@transaction.atomic
def project_create(
    *,
    name: str,
    slug: str,
    guidelines: str = "",
    description: str = "",
    base_model: str = "smollm2-135m-instruct",
    required_annotations: int = 1,
    training_algorithm: str = TrainingAlgorithm.DPO,
    **settings: Any,
) -> Project:
    """A project with its base policy (version 0, active) so the first round has a writer."""
    if Project.objects.filter(slug=slug).exists():
        raise ConflictError(f"A project with slug {slug!r} already exists.")
    if required_annotations < 1:
        raise ApplicationError("required_annotations must be at least 1.")
    if training_algorithm not in TrainingAlgorithm.values:
        raise ApplicationError(
            f"training_algorithm must be one of {', '.join(TrainingAlgorithm.values)}."
        )
    project = Project.objects.create(
        name=name,
        slug=slug,
        guidelines=guidelines,
        description=description,
        base_model=base_model,
        required_annotations=required_annotations,
        training_algorithm=training_algorithm,
        **settings,
    )
    base_policy_create(project_id=project.pk, base_model=project.base_model)
    return project


# The shares of a round's training prompts that ask for other feedback than a pair.
FEEDBACK_SHARE_FIELDS = ("demonstration_share", "rating_share", "ranking_share")


@transaction.atomic
def project_update(*, project: Project, changes: Mapping[str, Any], actor: User) -> Project:
    """Change a live project's settings (the serializer has checked each value); the feedback
    shares together may not pass 1. Audited with what changed, from what to what."""
    locked = Project.objects.select_for_update().get(pk=project.pk)
    before = {name: getattr(locked, name) for name in changes}
    for name, value in changes.items():
        setattr(locked, name, value)
    shares = sum(float(getattr(locked, name, 0.0)) for name in FEEDBACK_SHARE_FIELDS)
    if shares > 1 + 1e-9:
        raise ApplicationError(
            f"The feedback shares add up to {shares:g}: together they may be at most 1 "
            "(the rest of a round's prompts are pairs)."
        )
    locked.save(update_fields=list(changes))
    changed = {
        name: [before[name], value] for name, value in changes.items() if before[name] != value
    }
    if changed:
        audit_record(
            action=AuditAction.PROJECT_UPDATED,
            actor=actor,
            project_id=locked.pk,
            target=f"project {locked.slug}",
            detail={"changed": changed},
        )
    return locked


@transaction.atomic
def membership_set(
    *,
    project: Project,
    user: User,
    role: str = MemberRole.ANNOTATOR,
    actor: User | None = None,
    shares_served_traffic: bool | None = None,
) -> Membership:
    """Add or change a member; `shares_served_traffic` None leaves the opt-in as it is."""
    if role not in MemberRole.values:
        raise ApplicationError(f"role must be one of {', '.join(MemberRole.values)}.")
    defaults: dict[str, Any] = {"role": role}
    if shares_served_traffic is not None:
        defaults["shares_served_traffic"] = shares_served_traffic
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults=defaults
    )
    audit_record(
        action=AuditAction.MEMBERSHIP_SET,
        actor=actor,
        project_id=project.pk,
        target=f"user {user.get_username()}",
        detail={"role": role}
        | (
            {}
            if shares_served_traffic is None
            else {"shares_served_traffic": shares_served_traffic}
        ),
    )
    if role != MemberRole.ANNOTATOR:
        leases_release_for(project_id=project.pk, user_id=user.pk)  # no longer judging here
    return membership


# --- Prompt intake --------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptIntakeResult:
    created: list[Prompt] = field(default_factory=list)
    unchanged: list[Prompt] = field(default_factory=list)
    # Rows left out ({"index", "error"}); only ever non-empty when all_or_nothing is off.
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _PromptRow:
    external_id: str | None
    text: str
    messages: list[dict[str, str]] | None
    metadata: dict[str, Any]


def chat_messages_clean(raw: Any, *, limit: int) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    cleaned = []
    for turn in raw:
        if not isinstance(turn, Mapping) or set(turn) - {"role", "content"}:
            raise ValueError("each message must be an object with only role and content")
        role, content = turn.get("role"), turn.get("content")
        if role not in CHAT_ROLES:
            raise ValueError(f"message role must be one of {', '.join(CHAT_ROLES)}, not {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError("message content must be non-empty text")
        cleaned.append({"role": role, "content": content})
    if cleaned[-1]["role"] != "user":
        raise ValueError("the last message must be from the user: the policy answers it")
    if sum(len(turn["content"]) for turn in cleaned) > limit:
        raise ValueError(f"messages are longer than this project's limit of {limit} characters")
    return cleaned


def _clean_prompt_row(raw: Any, *, limit: int) -> _PromptRow:
    if not isinstance(raw, Mapping):
        raise ValueError("each prompt must be an object")
    unknown = set(raw) - {"external_id", "text", "messages", "metadata"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    text, messages = raw.get("text"), raw.get("messages")
    if (text is None) == (messages is None):
        raise ValueError("give exactly one of text and messages")
    external_id = raw.get("external_id")
    if external_id is not None and (not isinstance(external_id, str) or not external_id.strip()):
        raise ValueError("external_id must be non-empty text")
    if external_id is not None and len(external_id) > 200:
        raise ValueError("external_id must be at most 200 characters")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ValueError("metadata must be an object")
    if messages is not None:
        return _PromptRow(
            external_id, "", chat_messages_clean(messages, limit=limit), dict(metadata)
        )
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be non-empty")
    if len(text) > limit:
        raise ValueError(f"text is {len(text)} characters; this project's limit is {limit}")
    return _PromptRow(external_id, text, None, dict(metadata))


def _same_content(prompt: Prompt, row: _PromptRow) -> bool:
    return prompt.text == row.text and prompt.messages == row.messages


@transaction.atomic
def prompts_create(
    *, project: Project, rows: Iterable[Any], source: str = "api", all_or_nothing: bool = True
) -> PromptIntakeResult:
    """Store prompts; a row whose external id is already stored is left as it is.

    Sending the same batch twice changes nothing. A bad row (including an external id already
    used for a different prompt) gets one error naming its index: with all_or_nothing the whole
    batch is then rejected, otherwise the good rows are stored and the errors returned.
    """
    from django.conf import settings

    rows = list(rows)
    if len(rows) > settings.MAX_PROMPTS_PER_REQUEST:
        raise ApplicationError(
            f"{len(rows)} prompts in one request; the limit is {settings.MAX_PROMPTS_PER_REQUEST}."
        )
    limit = min(project.max_prompt_chars, settings.MAX_PROMPT_CHARS)
    cleaned: list[_PromptRow | None] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(rows):
        try:
            cleaned.append(_clean_prompt_row(raw, limit=limit))
        except ValueError as error:
            cleaned.append(None)
            errors.append({"index": index, "error": str(error)})

    ids = [row.external_id for row in cleaned if row and row.external_id]
    stored = {p.external_id: p for p in Prompt.objects.filter(project=project, external_id__in=ids)}
    seen: set[str] = set()
    result = PromptIntakeResult()
    to_create: list[Prompt] = []
    for index, row in enumerate(cleaned):
        if row is None:
            continue
        if row.external_id in seen:
            errors.append({"index": index, "error": f"external_id {row.external_id!r} repeats"})
            continue
        if row.external_id:
            seen.add(row.external_id)
        existing = stored.get(row.external_id) if row.external_id else None
        if existing is not None:
            if _same_content(existing, row):
                result.unchanged.append(existing)
            else:
                errors.append(
                    {
                        "index": index,
                        "error": f"external_id {row.external_id!r} is already used by prompt "
                        f"{existing.pk} with different content",
                    }
                )
            continue
        to_create.append(
            Prompt(
                project=project,
                external_id=row.external_id,
                text=row.text,
                messages=row.messages,
                metadata=row.metadata,
                source=source,
            )
        )
    errors.sort(key=lambda item: item["index"])
    if errors and all_or_nothing:
        raise ApplicationError(
            f"{len(errors)} of {len(rows)} prompts are invalid; nothing was stored.",
            extra={"rows": errors},
        )
    result.errors.extend(errors)
    for prompt in to_create:
        prompt.save()  # one by one so ids come back on every database
    result.created.extend(to_create)
    return result


def prompt_rows_from_file(*, content: bytes, filename: str) -> list[dict[str, Any]]:
    """Rows from an uploaded JSONL (one prompt object a line) or CSV (columns external_id,
    text, and any others as metadata) file, in the shape prompts_create takes."""
    from django.conf import settings

    if len(content) > settings.MAX_IMPORT_BYTES:
        raise too_large(settings.MAX_IMPORT_BYTES, "The file")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_number = content[: error.start].count(b"\n") + 1
        raise ApplicationError(f"The file is not UTF-8 (line {line_number}).") from None
    if filename.lower().endswith(".csv"):
        return _prompt_rows_from_csv(text)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json_loads_checked(line))
        except json.JSONDecodeError as error:
            raise ApplicationError(f"Line {number} is not valid JSON: {error.msg}.") from None
        except ValueError as error:  # nested too deep, NaN, or a lone surrogate
            raise ApplicationError(f"Line {number}: {error}") from None
    return rows


def _prompt_rows_from_csv(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _csv_prompt_rows(reader)
    except csv.Error as error:  # a field over csv's size limit, a NUL byte, ...
        raise ApplicationError(f"CSV line {reader.line_num}: {error}.") from None


def _csv_prompt_rows(reader: csv.DictReader[str]) -> list[dict[str, Any]]:
    if not reader.fieldnames or "text" not in reader.fieldnames:
        raise ApplicationError("A prompt CSV needs a header row with a 'text' column.")
    rows = []
    for record in reader:
        row: dict[str, Any] = {"text": record.pop("text") or ""}
        external_id = record.pop("external_id", None)
        if external_id:
            row["external_id"] = external_id
        metadata = {key: value for key, value in record.items() if key and value}
        if metadata:
            row["metadata"] = metadata
        rows.append(row)
    return rows


# --- Leases ---------------------------------------------------------------------------------


def leases_expire(*, now=None) -> int:
    """Return expired leases to the pool; safe to run from several beat ticks at once.

    One conditional UPDATE: a lease that was submitted between our read and our write is not
    touched, because the status condition is checked by the database at write time.
    """
    now = now or timezone.now()
    return Assignment.objects.filter(status=AssignmentStatus.LEASED, expires_at__lte=now).update(
        status=AssignmentStatus.EXPIRED, finished_at=now
    )


# --- Responses and pairing ------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedPair:
    """A pair the loop chose among a prompt's answers (training.pairing), with why and how
    urgently it should be judged."""

    prompt_id: int
    response_a_id: int
    response_b_id: int
    priority: float
    selection: dict[str, Any]


@transaction.atomic
def comparisons_create_for_round(
    *,
    round: Round,
    required_annotations: int | None = None,
    priority: float = 0.0,
    planned: Sequence[PlannedPair] | None = None,
    kind_of_prompt: Mapping[int, str] | None = None,
) -> list[Comparison]:
    """One comparison per prompt of the round: the `planned` pairs where given (the answers
    must be this round's policy's), else each prompt's two newest answers. A prompt in
    `kind_of_prompt` gets an item of that feedback kind (a written answer, ratings), the rest
    a choice between the two. A ranking item lists Project.ranking_size of the prompt's answers
    (ComparisonAnswer); a prompt with fewer answers gets a pair instead.

    Idempotent: a prompt that has its comparison in this round gets no second one.
    """
    required = required_annotations or round.project.required_annotations
    if planned is not None:
        created = _planned_comparisons_create(round=round, required=required, planned=planned)
    else:
        created = _newest_pairs_create(round=round, required=required, priority=priority)
    asked = kind_of_prompt or {}
    for kind in set(asked.values()):
        feedback_type(kind)  # an unknown kind is refused before anything changes
    for comparison in created:
        wanted = asked.get(comparison.prompt_id)
        if wanted == FeedbackKind.RANKING and not _ranking_answers_list(comparison, round=round):
            continue  # fewer answers than a ranking shows: the item stays a pair
        if wanted is not None and wanted != comparison.kind:
            comparison.kind = wanted
            comparison.save(update_fields=["kind"])
    return created


def _ranking_answers_list(comparison: Comparison, *, round: Round) -> bool:
    """List a ranking item's answers: its pair and the prompt's newest other answers of the
    round, ranking_size in all (the pair is the two newest unless planned otherwise). False,
    listing nothing, when the prompt has fewer answers than that."""
    size = round.project.ranking_size
    newest = Response.objects.filter(
        round=round, model_version=round.policy, prompt_id=comparison.prompt_id
    ).exclude(pk__in=[comparison.response_a_id, comparison.response_b_id])
    others = list(newest.order_by("-id").values_list("id", flat=True)[: size - 2])
    if len(others) < size - 2:
        return False
    listed = sorted([comparison.response_a_id, comparison.response_b_id, *others])
    ComparisonAnswer.objects.bulk_create(
        ComparisonAnswer(comparison=comparison, response_id=response_id, position=position)
        for position, response_id in enumerate(listed)
    )
    return True


def _newest_pairs_create(*, round: Round, required: int, priority: float) -> list[Comparison]:
    responses = (
        Response.objects.filter(round=round, model_version=round.policy)
        .order_by("prompt_id", "-id")
        .only("id", "prompt_id")
    )
    by_prompt: dict[int, list[Response]] = {}
    for response in responses:
        by_prompt.setdefault(response.prompt_id, []).append(response)
    created = []
    for prompt_id, answers in by_prompt.items():
        if len(answers) < 2:
            continue
        first, second = sorted(answers[:2], key=lambda r: r.pk)
        comparison, was_created = Comparison.objects.get_or_create(
            prompt_id=prompt_id,
            response_a=first,
            response_b=second,
            defaults={
                "project": round.project,
                "round": round,
                "required_annotations": required,
                "priority": priority,
            },
        )
        if was_created:
            created.append(comparison)
    return created


def _planned_comparisons_create(
    *, round: Round, required: int, planned: Sequence[PlannedPair]
) -> list[Comparison]:
    prompt_of_answer = dict(
        Response.objects.filter(round=round, model_version=round.policy).values_list(
            "id", "prompt_id"
        )
    )
    paired = set(Comparison.objects.filter(round=round).values_list("prompt_id", flat=True))
    fresh = []
    for plan in planned:
        prompts = {
            prompt_of_answer.get(plan.response_a_id),
            prompt_of_answer.get(plan.response_b_id),
        }
        if prompts != {plan.prompt_id}:
            raise ApplicationError(
                f"Prompt {plan.prompt_id}: a planned answer is not this round's answer to it."
            )
        if plan.prompt_id in paired or plan.response_a_id == plan.response_b_id:
            continue
        paired.add(plan.prompt_id)
        fresh.append(
            Comparison(
                project=round.project,
                prompt_id=plan.prompt_id,
                round=round,
                response_a_id=plan.response_a_id,
                response_b_id=plan.response_b_id,
                required_annotations=required,
                priority=plan.priority,
                selection=plan.selection,
            )
        )
    return Comparison.objects.bulk_create(fresh)


@transaction.atomic
def comparison_create_external(
    *,
    project: Project,
    prompt_id: int,
    text_a: str,
    text_b: str,
    model_a: str = "",
    model_b: str = "",
    priority: float = 0.0,
    gold_outcome: str | None = None,
    required_annotations: int | None = None,
) -> Comparison:
    """A pair of answers a program brings itself (another system's outputs, a red-team set)."""
    prompt = Prompt.objects.filter(project=project, pk=prompt_id).first()
    if prompt is None:
        raise NotFoundError(f"Prompt {prompt_id} does not exist in this project.")
    if not text_a.strip() or not text_b.strip():
        raise ApplicationError("Both answers must be non-empty.")
    if text_a == text_b:
        raise ApplicationError("The two answers are identical; there is nothing to compare.")
    if gold_outcome is not None and gold_outcome not in Outcome.values:
        raise ApplicationError(f"gold_outcome must be one of {', '.join(Outcome.values)}.")
    answers = [
        Response.objects.create(
            prompt=prompt, source=ResponseSource.EXTERNAL, external_model=model, text=text
        )
        for text, model in ((text_a, model_a), (text_b, model_b))
    ]
    return Comparison.objects.create(
        project=project,
        prompt=prompt,
        response_a=answers[0],
        response_b=answers[1],
        required_annotations=required_annotations or project.required_annotations,
        priority=priority,
        gold_outcome=gold_outcome,
    )


@transaction.atomic
def round_open(*, project: Project) -> Round:
    """Start collecting comparisons of the active policy's answers."""
    if Round.objects.filter(project=project, status=RoundStatus.OPEN).exists():
        raise ConflictError("This project already has an open round; close it first.")
    last = Round.objects.filter(project=project).order_by("-number").first()
    return Round.objects.create(
        project=project,
        number=(last.number + 1) if last else 1,
        policy=active_policy(project_id=project.pk),
        quota=project.round_quota,
    )


@transaction.atomic
def round_close(*, round: Round, closed_by: User | None = None) -> Round:
    # Conditional update: two closers (an admin and the quota trigger) close it exactly once.
    closed = Round.objects.filter(pk=round.pk, status=RoundStatus.OPEN).update(
        status=RoundStatus.CLOSED, closed_at=timezone.now(), closed_by=closed_by
    )
    if not closed:
        raise ConflictError(f"Round {round.number} is not open.")
    round.refresh_from_db()
    return round


# --- Assignment: leasing pairs to annotators ------------------------------------------------

CANDIDATE_SEARCHES = 20
LEASE_COLUMNS = (
    "comparison_id", "annotator_id", "status", "a_on_left", "leased_at", "expires_at"
)  # fmt: skip


def _judging_rights(project_id: int, annotator: User) -> queue.JudgingRights:
    """Lock the annotator's membership (see queue.lock_membership); refuse if not judging."""
    rights = queue.lock_membership(project_id=project_id, user_id=annotator.pk)
    if rights is None:
        # Only admins may learn that a project they are not a member of exists.
        if not (annotator.is_staff and Project.objects.filter(pk=project_id).exists()):
            raise NotFoundError(f"Project {project_id} does not exist or you are not a member.")
        raise ApplicationError(
            "You are not a member of this project.", code="forbidden", http_status=403
        )
    if rights.role != MemberRole.ANNOTATOR:
        raise _not_an_annotator(rights.role)
    if rights.paused:
        raise ApplicationError(
            "Your judging in this project is paused; ask an admin.", code="paused", http_status=403
        )
    return rights


def _not_an_annotator(role: str) -> ApplicationError:
    # A program's token (the client role) must never stand in for a person's judgment.
    return ApplicationError(
        f"Your role in this project is {role!r}; only annotators judge.",
        code="not_an_annotator",
        http_status=403,
    )


def leases_release_for(*, project_id: int, user_id: int) -> int:
    """Give back a user's live leases in a project (paused, removed, or no longer judging)."""
    return Assignment.objects.filter(
        annotator_id=user_id, comparison__project_id=project_id, status=AssignmentStatus.LEASED
    ).update(status=AssignmentStatus.RELEASED, finished_at=timezone.now())


def assignment_lease_next(
    *, project: Project, annotator: User, now=None, lease_seconds: int | None = None
) -> Assignment | None:
    """The annotator's next pair, leased; None when nothing is left for them."""
    return assignment_lease_next_in(
        project_id=project.pk, annotator=annotator, now=now, lease_seconds=lease_seconds
    )


@transaction.atomic
def assignment_lease_next_in(
    *, project_id: int, annotator: User, now=None, lease_seconds: int | None = None
) -> Assignment | None:
    """The annotator's next pair in a project given by id (no need to load it first).

    Asking again while a lease is live returns that same lease (a reloaded page loses nothing).
    Gold pairs are mixed in at the project's gold rate.
    """
    from django.conf import settings

    now = now or timezone.now()
    lease_seconds = lease_seconds or settings.LEASE_SECONDS
    rights = _judging_rights(project_id, annotator)
    live = queue.oldest_live_lease_id(project_id=project_id, annotator_id=annotator.pk, now=now)
    if live is not None:
        return Assignment.objects.get(pk=live)
    return _lease_new_pair(project_id, rights.gold_rate, annotator, now, lease_seconds)


@transaction.atomic
def assignment_lease_another(
    *, project: Project, annotator: User, now=None, lease_seconds: int | None = None
) -> Assignment | None:
    """A new pair beyond the annotator's live leases (the workspace's prefetch).

    The caller bounds how many leases one annotator holds; the overlap rules are the same.
    """
    from django.conf import settings

    now = now or timezone.now()
    rights = _judging_rights(project.pk, annotator)
    lease_seconds = lease_seconds or settings.LEASE_SECONDS
    return _lease_new_pair(project.pk, rights.gold_rate, annotator, now, lease_seconds)


def _lease_new_pair(
    project_id: int, gold_rate: float, annotator: User, now, lease_seconds: int
) -> Assignment | None:
    """Lease a pair this annotator has not judged or skipped (one they released comes back);
    gold pairs come at the project's gold rate."""
    prefer_gold = gold_rate > 0 and secrets.randbelow(10_000) < gold_rate * 10_000
    for gold in [True, None] if prefer_gold else [False, None]:
        passed: set[int] = set()
        # A pair whose last slot was taken since the search began is passed over; a few more
        # searches find another before giving up.
        for _ in range(CANDIDATE_SEARCHES):
            search = dict(
                project_id=project_id, annotator_id=annotator.pk, now=now, gold=gold, passed=passed
            )
            candidate = queue.next_candidate(**search)
            if candidate is None:
                # Every free pair may be locked this instant by another annotator's lease or
                # submit; "nothing left" must be true, so wait for such a pair instead.
                busy = queue.next_candidate(**search, lock=False)
                if busy is None:
                    break
                candidate = queue.lock_open_pair(busy.id)
                if candidate is None:
                    passed.add(busy.id)
                    continue
            # Counted again under the row lock: the search read the leases as of its own start,
            # and a lease committed since then must count, or the pair could exceed its overlap.
            live = queue.live_lease_count(comparison_id=candidate.id, now=now)
            if candidate.judgment_count + live < candidate.required_annotations:
                returned = _lease_again(candidate.id, annotator, now, lease_seconds)
                if returned is not None:
                    return returned
                lease = Assignment(
                    comparison_id=candidate.id,
                    annotator=annotator,
                    status=AssignmentStatus.LEASED,
                    a_on_left=secrets.randbelow(2) == 1,
                    leased_at=now,
                    expires_at=now + timedelta(seconds=lease_seconds),
                )
                queue.insert_row(lease, LEASE_COLUMNS)
                return lease
            passed.add(candidate.id)
    return None


def _lease_again(comparison_id: int, annotator: User, now, lease_seconds: int) -> Assignment | None:
    """The annotator's released or expired lease of this pair, live again with the same sides
    (one assignment row per annotator and pair); None when they never had it."""
    earlier = Assignment.objects.filter(
        comparison_id=comparison_id,
        annotator=annotator,
        status__in=[AssignmentStatus.RELEASED, AssignmentStatus.EXPIRED],
    ).first()
    if earlier is None:
        return None
    earlier.status = AssignmentStatus.LEASED
    earlier.leased_at = now
    earlier.expires_at = now + timedelta(seconds=lease_seconds)
    earlier.save(update_fields=["status", "leased_at", "expires_at"])
    return earlier


def _own_assignment(assignment_id: int, annotator: User) -> Assignment:
    assignment = (
        Assignment.objects.select_for_update().filter(pk=assignment_id, annotator=annotator).first()
    )
    if assignment is None:
        raise NotFoundError(f"Assignment {assignment_id} does not exist or is not yours.")
    return assignment


@transaction.atomic
def assignment_skip(*, assignment_id: int, annotator: User) -> Assignment:
    """Pass on a pair for good: it goes back to the pool and never returns to this annotator."""
    return _finish_lease(assignment_id, annotator, AssignmentStatus.SKIPPED)


@transaction.atomic
def assignment_release(*, assignment_id: int, annotator: User) -> Assignment:
    """Give a pair back unjudged (closing the page); others may take it."""
    return _finish_lease(assignment_id, annotator, AssignmentStatus.RELEASED)


def _finish_lease(assignment_id: int, annotator: User, status: str) -> Assignment:
    assignment = _own_assignment(assignment_id, annotator)
    if assignment.status == status:
        return assignment  # a retried request
    if assignment.status == AssignmentStatus.SUBMITTED:
        raise ConflictError("This pair is already judged.")
    assignment.status = status
    assignment.finished_at = timezone.now()
    assignment.save(update_fields=["status", "finished_at"])
    return assignment


# --- Judgments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitResult:
    judgment: Judgment
    created: bool
    project_id: int


def judgment_submit(
    *,
    assignment_id: int,
    annotator: User,
    choice: str,
    strength: str | None = None,
    rationale: str = "",
    time_spent_ms: int | None = None,
    submission_key: uuid.UUID | None = None,
    source: str = JudgmentSource.HUMAN,
) -> SubmitResult:
    """Record a pairwise judgment exactly once. A retried submit returns the stored judgment."""
    values = dict(
        choice=choice, strength=strength, rationale=rationale, time_spent_ms=time_spent_ms,
    )  # fmt: skip
    return feedback_submit(
        assignment_id=assignment_id,
        annotator=annotator,
        kind=FeedbackKind.PAIRWISE,
        values=values,
        submission_key=submission_key,
        source=source,
    )


def feedback_submit(
    *,
    assignment_id: int,
    annotator: User,
    kind: str,
    values: Mapping[str, Any],
    submission_key: uuid.UUID | None = None,
    source: str = JudgmentSource.HUMAN,
) -> SubmitResult:
    """Record feedback of any kind on a lease, exactly once; its type checks and stores it."""
    feedback = feedback_type(kind)
    feedback.check(values)
    values = {**values, "source": source}
    # The common case in one round trip where the type and backend allow (outside a
    # transaction, in its own implicit one). None means nothing was written, and the checked
    # path tells a retry, a used key, a skip, a full pair or another kind apart.
    stored = feedback.store_in_one_statement(
        assignment_id=assignment_id,
        annotator=annotator,
        key=submission_key or uuid.uuid4(),
        values=values,
        now=timezone.now(),
    )
    if stored is not None:
        _after_pair_counted(stored.pair_status, stored.round_id)
        return SubmitResult(stored.judgment, created=True, project_id=stored.project_id)
    return _feedback_submit_checked(
        assignment_id=assignment_id,
        annotator=annotator,
        feedback=feedback,
        values=values,
        submission_key=submission_key,
    )


@transaction.atomic
def _feedback_submit_checked(
    *,
    assignment_id: int,
    annotator: User,
    feedback: FeedbackType,
    values: Mapping[str, Any],
    submission_key: uuid.UUID | None,
) -> SubmitResult:
    """feedback_submit under row locks, step by step: every path, on every database."""
    lease = queue.lock_lease_for_submit(assignment_id=assignment_id, annotator_id=annotator.pk)
    if lease is None:
        raise NotFoundError(f"Assignment {assignment_id} does not exist or is not yours.")
    if lease.kind != feedback.kind:
        raise ApplicationError(f"This item takes {lease.kind} feedback, not {feedback.kind}.")
    if lease.status == AssignmentStatus.SUBMITTED:
        # A judgment is stored in the same transaction that marks its lease submitted, so
        # only a submitted lease can have one: a retry, answered with what was stored.
        stored = feedback.stored_by(comparison_id=lease.comparison_id, annotator=annotator)
        if stored is None:  # deleted by an admin since: the pair stays judged once
            raise ConflictError("This pair is already judged.")
        said = None if stored.submission_key == submission_key else feedback.differs(stored, values)
        if said is not None:
            # Another tab or a client with a new key says something else: the first judgment
            # stands, and the second is told so instead of being answered with the first.
            raise ConflictError(
                f"You already judged this pair: {said}.",
                extra={"judgment_id": stored.pk, "already": said},
            )
        return SubmitResult(stored, created=False, project_id=lease.project_id)
    # A retry (above) is answered whatever happened since; a new judgment needs the role now.
    if lease.member_role is None:
        raise ApplicationError(
            "You are no longer a member of this project.", code="forbidden", http_status=403
        )
    if lease.member_role != MemberRole.ANNOTATOR:
        raise _not_an_annotator(lease.member_role)
    if submission_key is not None and any(
        other.key_used(submission_key) for other in FEEDBACK_TYPES.values()
    ):
        raise ConflictError("This submission key was already used for another pair.")
    if lease.status in (AssignmentStatus.SKIPPED, AssignmentStatus.RELEASED):
        raise ConflictError("This pair was skipped or released; ask for the next one.")
    now = timezone.now()
    pair_status = queue.count_judgment(lease, now)
    if pair_status is None:
        raise ConflictError(
            "Your lease expired and this pair already has all the judgments it needs.",
            extra={"lease_expired": True},
        )
    judgment = feedback.store(
        lease=lease, annotator=annotator, key=submission_key or uuid.uuid4(), values=values, now=now
    )
    _after_pair_counted(pair_status, lease.round_id)
    queue.mark_lease_submitted(lease.assignment_id, now)
    return SubmitResult(judgment, created=True, project_id=lease.project_id)


def _after_pair_counted(pair_status: str, round_id: int | None) -> None:
    if pair_status == ComparisonStatus.COMPLETE and round_id is not None:
        # Listeners (the loop's quota trigger) run after commit, so they count this pair
        # as complete.
        transaction.on_commit(lambda: hooks.pair_completed(round_id))


# --- Quality control ------------------------------------------------------------------------


@transaction.atomic
def annotator_set_paused(
    *, project: Project, user_id: int, paused: bool, actor: User | None = None, reason: str = ""
) -> Membership:
    membership = (
        Membership.objects.select_for_update().filter(project=project, user_id=user_id).first()
    )
    if membership is None:
        raise NotFoundError(f"User {user_id} is not a member of this project.")
    membership.paused = paused
    membership.save(update_fields=["paused"])
    audit_record(
        action=AuditAction.ANNOTATOR_PAUSED if paused else AuditAction.ANNOTATOR_RESUMED,
        actor=actor,
        project_id=project.pk,
        target=f"user {user_id}",
        detail={"reason": reason} if reason else {},
    )
    if paused:
        # Their live leases go back to the pool at once instead of waiting to expire.
        leases_release_for(project_id=project.pk, user_id=user_id)
    return membership


def annotators_pause_below_gold(
    *, project: Project, min_accuracy: float, min_gold_judged: int = 5
) -> list[int]:
    """Pause every annotator whose gold accuracy is below the threshold (with enough gold)."""
    from annotate.selectors import project_statistics

    stats = project_statistics(project=project)["annotators"]
    to_pause = [
        row["annotator_id"]
        for row in stats
        if row["gold_judged"] >= min_gold_judged
        and row["gold_accuracy"] is not None
        and row["gold_accuracy"] < min_accuracy
        and not row["paused"]
    ]
    for user_id in to_pause:
        annotator_set_paused(
            project=project,
            user_id=user_id,
            paused=True,
            reason=f"gold accuracy below {min_accuracy:.0%}",
        )
    return to_pause


def annotators_pause_unreliable(*, project: Project, below: float) -> list[int]:
    """Pause every active annotator whose crowd-model reliability is below `below` on enough
    decided votes to say so (annotate.crowd.FLAG_MIN_VOTES); each pause is audited with why."""
    from annotate.selectors import project_crowd_fit

    fit, _ = project_crowd_fit(project=project)
    active = Membership.objects.filter(project=project, paused=False, user_id__in=fit.reliability)
    to_pause = sorted(
        user_id
        for user_id in active.values_list("user_id", flat=True)
        if fit.flagged(user_id, below=below)
    )
    for user_id in to_pause:
        annotator_set_paused(
            project=project,
            user_id=user_id,
            paused=True,
            reason=f"crowd-model reliability {fit.reliability[user_id]:.2f} on "
            f"{fit.votes[user_id]} votes, below the project's {below:.2f}",
        )
    return to_pause


# --- Served traffic back into the loop ------------------------------------------------------


@dataclass(frozen=True)
class ServedAnswer:
    text: str
    token_count: int
    finished: bool


@transaction.atomic
def served_exchange_keep(
    *,
    project_id: int,
    user_id: int,
    messages: list[dict[str, str]],
    answers: list[ServedAnswer],
    version_id: int,
    request_id: str,
    keep_pairs: bool,
) -> Prompt | None:
    """Keep what a member asked the policy server (and, with `keep_pairs` and two answers or
    more, the first two answers as a pair in the judging queue), with the version that answered.

    Only a member who opted in (`shares_served_traffic`) is ever kept; the same conversation
    asked twice is one prompt. Returns the prompt, or None when nothing was kept.
    """
    shares = Membership.objects.filter(
        project_id=project_id, user_id=user_id, shares_served_traffic=True
    ).exists()
    if not shares:
        return None
    project = Project.objects.get(pk=project_id)
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:40]
    row = {
        "external_id": f"served-{digest}",
        "messages": messages,
        "metadata": {"served_by_version": version_id, "request": request_id},
    }
    intake = prompts_create(project=project, rows=[row], source="served", all_or_nothing=False)
    if intake.errors:  # e.g. a conversation that does not end with a user turn: not a prompt
        return None
    prompt = Prompt.objects.get(project=project, external_id=row["external_id"])
    if keep_pairs and len(answers) >= 2:
        first, second = (
            Response.objects.create(
                prompt=prompt,
                model_version_id=version_id,
                source=ResponseSource.POLICY,
                text=a.text,
                token_count=a.token_count,
                finished=a.finished,
                generation_settings={"served": request_id},
            )
            for a in answers[:2]
        )
        Comparison.objects.create(
            project=project, prompt=prompt, response_a=first, response_b=second,
            required_annotations=project.required_annotations,
        )  # fmt: skip
    return prompt


# --- Demonstrations: review ------------------------------------------------------------------


@transaction.atomic
def demonstration_review(
    *, project: Project, demonstration_id: int, reviewer: User, accepted: bool
) -> Demonstration:
    """A second annotator (or a manager) accepts or rejects a written answer waiting for
    review; only an accepted one trains. Nobody reviews their own, and a review is final."""
    demonstration = (
        Demonstration.objects.select_for_update()
        .filter(project=project, pk=demonstration_id)
        .first()
    )
    if demonstration is None:
        raise NotFoundError(f"Demonstration {demonstration_id} does not exist in this project.")
    if demonstration.annotator_id == reviewer.pk:
        raise ApplicationError(
            "You wrote this answer: a second person reviews it.", code="forbidden", http_status=403
        )
    may_review = Membership.objects.filter(
        Q(role=MemberRole.CLIENT) | Q(role=MemberRole.ANNOTATOR, paused=False),
        project=project,
        user=reviewer,
    ).exists()
    if not (reviewer.is_staff or may_review):
        raise ApplicationError(
            "Only the project's annotators and managers review demonstrations.",
            code="forbidden",
            http_status=403,
        )
    if demonstration.review_status != ReviewStatus.PENDING:
        raise ConflictError(
            f"This demonstration was already reviewed: {demonstration.review_status}."
        )
    demonstration.review_status = ReviewStatus.ACCEPTED if accepted else ReviewStatus.REJECTED
    demonstration.reviewed_by = reviewer
    demonstration.reviewed_at = timezone.now()
    demonstration.save(update_fields=["review_status", "reviewed_by", "reviewed_at"])
    return demonstration


# --- Judgments by a model (AI judges) ---------------------------------------------------------


def judgment_record_uncounted(
    *,
    comparison: Comparison,
    annotator: User,
    choice: str,
    a_on_left: bool,
    rationale: str = "",
    source: str = JudgmentSource.AI,
) -> Judgment:
    """A judgment beside the pair's quota: it neither completes the pair nor takes a human's
    place, and resolution leaves it out of the label (resolved_pairs counts only judgments
    from the quota). What an AI judge that does not count toward the quota gives."""
    check_choice(choice, None)
    if comparison.kind != FeedbackKind.PAIRWISE:
        raise ApplicationError("Only pairs take a judgment beside the quota.")
    left, right = (
        (comparison.response_a_id, comparison.response_b_id)
        if a_on_left
        else (comparison.response_b_id, comparison.response_a_id)
    )
    judgment, _ = Judgment.objects.get_or_create(
        comparison=comparison,
        annotator=annotator,
        defaults={
            "choice": choice,
            "rationale": rationale,
            "left_response_id": left,
            "right_response_id": right,
            "source": source,
        },
    )
    return judgment

"""Writes for feedback collection. Keyword-only, typed, atomic; views call exactly one of these."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotate.models import (
    Assignment,
    AssignmentStatus,
    MemberRole,
    Membership,
    Project,
    Prompt,
    TrainingAlgorithm,
)
from config.errors import ApplicationError, ConflictError

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
    from training.services import base_policy_create  # training depends on annotate's models

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
    base_policy_create(project=project)
    return project


@transaction.atomic
def membership_set(
    *, project: Project, user: AbstractBaseUser, role: str = MemberRole.ANNOTATOR
) -> Membership:
    if role not in MemberRole.values:
        raise ApplicationError(f"role must be one of {', '.join(MemberRole.values)}.")
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    return membership


# --- Prompt intake --------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptIntakeResult:
    created: list[Prompt] = field(default_factory=list)
    unchanged: list[Prompt] = field(default_factory=list)


@dataclass(frozen=True)
class _PromptRow:
    external_id: str | None
    text: str
    messages: list[dict[str, str]] | None
    metadata: dict[str, Any]


def _clean_messages(raw: Any, *, limit: int) -> list[dict[str, str]]:
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
        return _PromptRow(external_id, "", _clean_messages(messages, limit=limit), dict(metadata))
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be non-empty")
    if len(text) > limit:
        raise ValueError(f"text is {len(text)} characters; this project's limit is {limit}")
    return _PromptRow(external_id, text, None, dict(metadata))


def _same_content(prompt: Prompt, row: _PromptRow) -> bool:
    return prompt.text == row.text and prompt.messages == row.messages


@transaction.atomic
def prompts_create(
    *, project: Project, rows: Iterable[Any], source: str = "api"
) -> PromptIntakeResult:
    """Store prompts all-or-nothing; a row whose external id is already stored is left as it is.

    Sending the same batch twice changes nothing. Any bad row (including an external id already
    used for a different prompt) rejects the whole batch with one error per bad row.
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
    if errors:
        errors.sort(key=lambda item: item["index"])
        raise ApplicationError(
            f"{len(errors)} of {len(rows)} prompts are invalid; nothing was stored.",
            extra={"rows": errors},
        )
    for prompt in to_create:
        prompt.save()  # one by one so ids come back on every database
    result.created.extend(to_create)
    return result


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

"""Import outside preference data: prompts, external answers and imported judgments.

Outside pairs (TRL preference JSONL, Anthropic HH-RLHF, alpaca_eval annotations) can seed the
first reward model before a single human judgment exists. Each row becomes:

- a Prompt keyed by external_id: the row's "id" when it has one, else a hash of the prompt
  content, so importing the same file twice finds the same prompts;
- two Responses with source "external" (no model version, no round); an identical answer text
  already imported for that prompt is reused;
- one complete Comparison (no round, overlap 1) and one Judgment by the project's import
  annotator (source "imported", no Assignment). Sides are recorded truthfully: the judgment
  shows response_a on the left and response_b on the right.

Formats (one JSON object per line; blank lines are skipped, unknown fields ignored):

- ``trl``: {"prompt", "chosen", "rejected"} as plain text; or conversational (prompt a list of
  messages, chosen/rejected one assistant message each); or an implicit prompt (chosen and
  rejected full conversations that share every turn but the last). Optional "id". The chosen
  answer is response_a and the judgment says "a".
- ``hh``: {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}. The turns before
  the final Assistant turn are the prompt (and must be the same in both); the final Assistant
  turns are the answers. Chosen is response_a.
- ``alpaca_eval``: {"instruction", "output_1", "output_2", "preference"}, optional
  "generator_1"/"generator_2" (stored as external_model). output_1 is response_a. Preference
  0 is a tie; otherwise alpaca_eval's preference is 1 + P(output_2 is better), so values in
  [1, 2] round to the nearer side: below 1.5 is output_1, above is output_2, and exactly 1.5
  (an evenly split judge) is a tie.

A published file imports as published: an empty answer is stored (a silent reply judged better
than a harmful one is a real preference) and counted in the result's warnings; a row that cannot
be a pair (transcripts that part before their last turn, a malformed line) is skipped and
reported while the rest is stored, unless the caller asks for all or nothing.

A prompt that is a single user turn is stored as plain text, so the same question imported from
different formats is one prompt. Row numbers in errors are 1-based line numbers in the file.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from annotate.models import (
    Choice,
    Comparison,
    ComparisonStatus,
    Demonstration,
    Judgment,
    JudgmentSource,
    Outcome,
    Project,
    Prompt,
    Response,
    ResponseSource,
    ReviewStatus,
)
from annotate.services import chat_messages_clean
from config.errors import ApplicationError, ConflictError
from config.safe_json import json_loads_checked
from config.users import User
from config.validation import too_large

SFT_FORMAT = "sft"  # demonstrations, not pairs: demonstrations_import
IMPORT_FORMATS = ("trl", "hh", "alpaca_eval", SFT_FORMAT)
# A file saved in the wrong encoding fails on every line; the first errors say enough.
MAX_REPORTED_ERRORS = 100
EXTERNAL_ID_MAX_CHARS = 200
EXTERNAL_MODEL_MAX_CHARS = 200
# What external_model says when the row does not name the model that wrote the answer.
UNKNOWN_MODEL = {"trl": "unknown (trl import)", "hh": "unknown (hh-rlhf import)"}

# Keyed by the plain strings PreferencePair.outcome holds (Outcome members are equal to them).
_OUTCOME_CHOICE: dict[str, Choice] = {
    Outcome.A: Choice.LEFT,
    Outcome.B: Choice.RIGHT,
    Outcome.TIE: Choice.TIE,
}


def max_import_bytes() -> int:
    # A request imports synchronously (about ten queries per row), so this also bounds how
    # long one upload holds a web worker.
    return settings.MAX_IMPORT_BYTES


@dataclass
class ImportResult:
    format: str
    rows_read: int = 0
    prompts_created: int = 0
    responses_created: int = 0
    comparisons_created: int = 0
    judgments_created: int = 0
    demonstrations_created: int = 0  # format "sft"
    skipped_duplicates: int = 0  # the pair (either order) is already stored for that prompt
    skipped_identical: int = 0  # both answers are the same text: no preference to learn
    rows_failed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # first MAX_REPORTED_ERRORS
    # Rows stored with an empty answer: legitimate (a refusal can win), but worth a look.
    empty_answers: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)  # first MAX_REPORTED_ERRORS

    @property
    def created_anything(self) -> bool:
        return bool(
            self.prompts_created
            or self.responses_created
            or self.comparisons_created
            or self.demonstrations_created
        )


@dataclass(frozen=True)
class PreferencePair:
    """One parsed row, before it touches the database."""

    external_id: str | None
    text: str  # "" when the prompt is a chat (messages)
    messages: list[dict[str, str]] | None
    answer_a: str
    answer_b: str
    outcome: str  # a, b or tie, in terms of answer_a / answer_b
    model_a: str
    model_b: str


class RowError(ValueError):
    """A row that cannot be imported; the message says what to fix."""


# --- Parsing: pure functions, one per format ------------------------------------------------


def _prompt_fields(raw: str | list, *, limit: int) -> tuple[str, list[dict[str, str]] | None]:
    """(text, messages) for a prompt; a lone user turn becomes plain text."""
    if isinstance(raw, str):
        if not raw.strip():
            raise RowError("the prompt is empty")
        if len(raw) > limit:
            raise RowError(f"the prompt is {len(raw)} characters; this project's limit is {limit}")
        return raw, None
    try:
        messages = chat_messages_clean(raw, limit=limit)
    except ValueError as error:
        raise RowError(f"prompt: {error}") from None
    if len(messages) == 1:
        return messages[0]["content"], None
    return "", messages


def _answer(value: Any, name: str) -> str:
    """An answer is text or a list holding exactly one assistant message."""
    if isinstance(value, list):
        if (
            len(value) != 1
            or not isinstance(value[0], Mapping)
            or value[0].get("role") != "assistant"
        ):
            raise RowError(f'"{name}" must be text or a list with one assistant message')
        value = value[0].get("content")
    if not isinstance(value, str):
        raise RowError(f'"{name}" must be text or a list with one assistant message')
    return value  # an empty answer is an answer: a silent reply can be the better one


def _external_id(record: Mapping[str, Any]) -> str | None:
    value = record.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowError('"id" must be text or an integer')
    value = str(value).strip()
    if not value or len(value) > EXTERNAL_ID_MAX_CHARS:
        raise RowError(f'"id" must be 1 to {EXTERNAL_ID_MAX_CHARS} characters')
    return value


def _split_conversations(chosen: Any, rejected: Any) -> tuple[list, Any, Any]:
    """Shared turns and the two final assistant turns of two full conversations."""
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        raise RowError(
            'without "prompt", chosen and rejected must be conversations (lists of messages)'
        )
    if len(chosen) < 2 or len(rejected) < 2 or chosen[:-1] != rejected[:-1]:
        raise RowError(
            "chosen and rejected must share every turn before their final assistant answer"
        )
    return chosen[:-1], chosen[-1:], rejected[-1:]


def parse_trl(record: Mapping[str, Any], *, limit: int) -> PreferencePair:
    if "chosen" not in record or "rejected" not in record:
        raise RowError('a TRL row needs "chosen" and "rejected"')
    if "prompt" in record:
        prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
        if not isinstance(prompt, str | list):
            raise RowError('"prompt" must be text or a list of messages')
    else:
        prompt, chosen, rejected = _split_conversations(record["chosen"], record["rejected"])
    text, messages = _prompt_fields(prompt, limit=limit)
    model = UNKNOWN_MODEL["trl"]
    return PreferencePair(
        external_id=_external_id(record),
        text=text,
        messages=messages,
        answer_a=_answer(chosen, "chosen"),
        answer_b=_answer(rejected, "rejected"),
        outcome=Outcome.A,
        model_a=model,
        model_b=model,
    )


# A turn marker starts the transcript or follows a blank line, as in the HH-RLHF files.
_HH_MARKER = re.compile(r"(?:\A|\n\n)(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(transcript: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello' -> [{"role": "user", ...}, {"role": ...}]."""
    markers = list(_HH_MARKER.finditer(transcript))
    if not markers or transcript[: markers[0].start()].strip():
        raise RowError('a transcript must start with "Human:"')
    turns = []
    for marker, following in zip(markers, [*markers[1:], None], strict=True):
        end = following.start() if following is not None else len(transcript)
        turns.append(
            {"role": _HH_ROLES[marker.group(1)], "content": transcript[marker.end() : end].strip()}
        )
    return turns


def parse_hh(record: Mapping[str, Any], *, limit: int) -> PreferencePair:
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise RowError('an HH row needs "chosen" and "rejected" transcripts as text')
    chosen_turns, rejected_turns = parse_hh_transcript(chosen), parse_hh_transcript(rejected)
    for turns, name in ((chosen_turns, "chosen"), (rejected_turns, "rejected")):
        if turns[-1]["role"] != "assistant":
            raise RowError(f'the {name} transcript must end with an "Assistant:" turn')
    prompt, answer_a, answer_b = _split_conversations(chosen_turns, rejected_turns)
    text, messages = _prompt_fields(prompt, limit=limit)
    model = UNKNOWN_MODEL["hh"]
    return PreferencePair(
        external_id=None,
        text=text,
        messages=messages,
        answer_a=_answer(answer_a, "chosen"),
        answer_b=_answer(answer_b, "rejected"),
        outcome=Outcome.A,
        model_a=model,
        model_b=model,
    )


def alpaca_outcome(preference: Any) -> str:
    """alpaca_eval preference -> a / b / tie (see the module docstring for 1.5)."""
    if isinstance(preference, bool) or not isinstance(preference, int | float):
        raise RowError('"preference" must be a number (1, 2, or 0 for a tie)')
    if not math.isfinite(preference) or not (preference == 0 or 1 <= preference <= 2):
        raise RowError(f'"preference" must be 0 or between 1 and 2, not {preference!r}')
    if preference == 0 or preference == 1.5:
        return Outcome.TIE
    return Outcome.A if preference < 1.5 else Outcome.B


def _generator(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        return "unknown (alpaca_eval import)"
    if not isinstance(value, str) or not value.strip():
        raise RowError(f'"{name}" must be non-empty text')
    if len(value) > EXTERNAL_MODEL_MAX_CHARS:
        raise RowError(f'"{name}" must be at most {EXTERNAL_MODEL_MAX_CHARS} characters')
    return value


def parse_alpaca_eval(record: Mapping[str, Any], *, limit: int) -> PreferencePair:
    for name in ("instruction", "output_1", "output_2", "preference"):
        if name not in record:
            raise RowError(f'an alpaca_eval row needs "{name}"')
    instruction = record["instruction"]
    if not isinstance(instruction, str):
        raise RowError('"instruction" must be text')
    text, messages = _prompt_fields(instruction, limit=limit)
    return PreferencePair(
        external_id=None,
        text=text,
        messages=messages,
        answer_a=_answer(record["output_1"], "output_1"),
        answer_b=_answer(record["output_2"], "output_2"),
        outcome=alpaca_outcome(record["preference"]),
        model_a=_generator(record, "generator_1"),
        model_b=_generator(record, "generator_2"),
    )


PARSERS = {"trl": parse_trl, "hh": parse_hh, "alpaca_eval": parse_alpaca_eval}


def prompt_content_key(text: str, messages: list[dict[str, str]] | None) -> str:
    """A stable external_id for a row without one: the same prompt always gets the same key."""
    content = json.dumps(
        {"text": text, "messages": messages}, ensure_ascii=False, sort_keys=True
    ).encode("utf-8")
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


# --- Reading the file -----------------------------------------------------------------------


def _lines(file: IO[bytes], *, limit: int) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) with the size limit enforced while reading, not trusted."""
    size = getattr(file, "size", None)
    if size is not None and size > limit:
        raise too_large(limit, "The file")
    read = 0
    number = 0
    while True:
        # Bounded readline: one giant line cannot get past the limit into memory.
        raw = file.readline(limit - read + 1)
        if not raw:
            return
        read += len(raw)
        if read > limit:
            raise too_large(limit, "The file")
        number += 1
        yield number, raw


def _record(number: int, raw: bytes) -> dict[str, Any]:
    """The JSON object on one (non-blank) line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RowError(
            f"line {number} is not valid UTF-8 (byte {error.start + 1} of the line); "
            "save the file as UTF-8"
        ) from None
    try:
        record = json_loads_checked(text)
    except json.JSONDecodeError as error:
        raise RowError(f"invalid JSON ({error.msg} at column {error.colno})") from None
    except ValueError as error:  # nested too deep, NaN, or a lone surrogate
        raise RowError(str(error)) from None
    if not isinstance(record, dict):
        raise RowError(f"expected a JSON object, got {type(record).__name__}")
    return record


# --- Storing --------------------------------------------------------------------------------


def import_annotator_get_or_create(*, project: Project) -> User:
    """The per-project user imported judgments are recorded under; it can never log in."""
    username = f"import-bot-{project.slug}"
    user, created = User.objects.get_or_create(username=username, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    elif user.is_active or user.has_usable_password():
        # Never attach imported judgments to a person who happens to have this name.
        raise ConflictError(
            f"The user {username!r} exists and can log in; rename it so imports can use the name."
        )
    return user


def _prompt_get_or_create(
    project: Project,
    external_id: str | None,
    text: str,
    messages: list[dict[str, str]] | None,
    source: str,
) -> tuple[Prompt, bool]:
    external_id = external_id or prompt_content_key(text, messages)
    existing = Prompt.objects.filter(project=project, external_id=external_id).first()
    if existing is not None:
        if existing.text != text or existing.messages != messages:
            raise RowError(
                f"id {external_id!r} is already used by prompt {existing.pk} with a different "
                "prompt"
            )
        return existing, False
    prompt = Prompt.objects.create(
        project=project,
        external_id=external_id,
        text=text,
        messages=messages,
        source=source,
    )
    return prompt, True


def _response_get_or_create(prompt: Prompt, text: str, model: str) -> tuple[Response, bool]:
    existing = (
        Response.objects.filter(prompt=prompt, source=ResponseSource.EXTERNAL, text=text)
        .order_by("id")
        .first()
    )
    if existing is not None:
        return existing, False
    response = Response.objects.create(
        prompt=prompt,
        source=ResponseSource.EXTERNAL,
        external_model=model,
        text=text,
        model_version=None,
        round=None,
    )
    return response, True


@dataclass
class _RowCounts:
    prompts: int = 0
    responses: int = 0
    comparisons: int = 0
    duplicate: bool = False
    identical: bool = False


def _store_pair(
    *, project: Project, pair: PreferencePair, annotator: User, source: str
) -> _RowCounts:
    prompt, prompt_created = _prompt_get_or_create(
        project, pair.external_id, pair.text, pair.messages, source
    )
    response_a, a_created = _response_get_or_create(prompt, pair.answer_a, pair.model_a)
    response_b, b_created = _response_get_or_create(prompt, pair.answer_b, pair.model_b)
    counts = _RowCounts(prompts=int(prompt_created), responses=int(a_created) + int(b_created))
    if response_a.pk == response_b.pk:
        counts.identical = True
        return counts
    # The same two answers in the other order are the same question asked again: first row wins.
    same_pair = Q(response_a=response_a, response_b=response_b) | Q(
        response_a=response_b, response_b=response_a
    )
    if Comparison.objects.filter(same_pair, prompt=prompt).exists():
        counts.duplicate = True
        return counts
    comparison = Comparison.objects.create(
        project=project,
        prompt=prompt,
        round=None,
        response_a=response_a,
        response_b=response_b,
        required_annotations=1,
        judgment_count=1,
        status=ComparisonStatus.COMPLETE,
        completed_at=timezone.now(),
    )
    Judgment.objects.create(
        comparison=comparison,
        annotator=annotator,
        assignment=None,
        choice=_OUTCOME_CHOICE[pair.outcome],
        left_response=response_a,
        right_response=response_b,
        source=JudgmentSource.IMPORTED,
    )
    counts.comparisons = 1
    return counts


def _add(result: ImportResult, counts: _RowCounts) -> None:
    result.prompts_created += counts.prompts
    result.responses_created += counts.responses
    result.comparisons_created += counts.comparisons
    result.judgments_created += counts.comparisons  # one imported judgment per comparison
    result.skipped_duplicates += counts.duplicate
    result.skipped_identical += counts.identical


def _record_empty_answer(result: ImportResult, row: int) -> None:
    result.empty_answers += 1
    if len(result.warnings) < MAX_REPORTED_ERRORS:
        message = "an answer is empty; stored (a silent reply can be the better one)"
        result.warnings.append({"row": row, "warning": message})


def _record_error(result: ImportResult, row: int, message: str) -> None:
    result.rows_failed += 1
    if len(result.errors) < MAX_REPORTED_ERRORS:
        result.errors.append({"row": row, "error": message})


RowHandler = Callable[[int, dict[str, Any]], None]


def _import_lines(
    *, file: IO[bytes], result: ImportResult, handle: RowHandler, all_or_nothing: bool
) -> ImportResult:
    """Each line of the file through `handle` (which parses, stores in its own savepoint and
    counts); a bad row is recorded in `result.errors`, or fails the whole import when asked."""
    for number, raw in _lines(file, limit=max_import_bytes()):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)  # some editors start UTF-8 files with one
        if not raw.strip():
            continue
        result.rows_read += 1
        try:
            handle(number, _record(number, raw))
        except RowError as error:
            _record_error(result, number, str(error))
        except IntegrityError:
            _record_error(result, number, "conflicts with data written at the same time; retry")
    if result.rows_read == 0:
        raise ApplicationError("The file has no rows; give one JSON object per line.")
    if all_or_nothing and result.rows_failed:
        raise ApplicationError(
            f"{result.rows_failed} of {result.rows_read} rows are invalid; nothing was stored.",
            extra={"rows_failed": result.rows_failed, "errors": result.errors},
        )
    return result


@transaction.atomic
def preferences_import(
    *,
    project: Project,
    file: IO[bytes],
    format: str,
    all_or_nothing: bool = False,
) -> ImportResult:
    """Import a preference JSONL file (binary) into `project`; see the module docstring.

    By default a published file imports as published: rows that cannot be a pair are skipped
    and come back in `errors`, the rest is stored, and rows with an empty answer are stored
    and listed in `warnings`. With all_or_nothing, any bad row stores nothing and raises
    ApplicationError listing the bad rows. A file over the size limit is refused whole (413).
    A file of demonstrations (format "sft") goes to demonstrations_import.
    """
    if format == SFT_FORMAT:
        return demonstrations_import(project=project, file=file, all_or_nothing=all_or_nothing)
    if format not in PARSERS:
        raise ApplicationError(f"format must be one of {', '.join(IMPORT_FORMATS)}.")
    parse = PARSERS[format]
    limit = min(project.max_prompt_chars, settings.MAX_PROMPT_CHARS)
    annotator = import_annotator_get_or_create(project=project)
    source = f"import:{format}"
    result = ImportResult(format=format)

    def handle(number: int, record: dict[str, Any]) -> None:
        pair = parse(record, limit=limit)
        # A savepoint per row: a bad row's partial writes go, the good rows stay. Counts are
        # added only once the savepoint is released, so they match what is stored.
        with transaction.atomic():
            counts = _store_pair(project=project, pair=pair, annotator=annotator, source=source)
        _add(result, counts)
        if counts.comparisons and not (pair.answer_a.strip() and pair.answer_b.strip()):
            _record_empty_answer(result, number)

    return _import_lines(file=file, result=result, handle=handle, all_or_nothing=all_or_nothing)


# --- Demonstrations (TRL's SFT format) ------------------------------------------------------


@dataclass(frozen=True)
class ParsedDemonstration:
    external_id: str | None
    text: str  # "" when the prompt is a chat (messages)
    messages: list[dict[str, str]] | None
    completion: str


def parse_sft(record: Mapping[str, Any], *, limit: int) -> ParsedDemonstration:
    """TRL's conversational SFT row ({"messages": [..., assistant answer]}) or its prompt /
    completion form (each text or messages)."""
    if "messages" in record:
        turns = record["messages"]
        if (
            not isinstance(turns, list)
            or len(turns) < 2
            or not isinstance(turns[-1], Mapping)
            or turns[-1].get("role") != "assistant"
        ):
            raise RowError('"messages" must be turns that end with the assistant\'s answer')
        prompt, completion = turns[:-1], _answer(turns[-1:], "messages")
    elif "prompt" in record and "completion" in record:
        prompt, completion = record["prompt"], _answer(record["completion"], "completion")
        if not isinstance(prompt, str | list):
            raise RowError('"prompt" must be text or a list of messages')
    else:
        raise RowError('an SFT row needs "messages", or "prompt" and "completion"')
    text, messages = _prompt_fields(prompt, limit=limit)
    return ParsedDemonstration(_external_id(record), text, messages, completion)


@transaction.atomic
def demonstrations_import(
    *, project: Project, file: IO[bytes], all_or_nothing: bool = False
) -> ImportResult:
    """Import written answers for SFT: each row a Prompt (found again by id or content, as for
    pairs) and an accepted Demonstration by the import annotator. The same answer to the same
    prompt imported again is skipped; an empty answer is stored and warned about."""
    limit = min(project.max_prompt_chars, settings.MAX_PROMPT_CHARS)
    annotator = import_annotator_get_or_create(project=project)
    source = f"import:{SFT_FORMAT}"
    result = ImportResult(format=SFT_FORMAT)

    def handle(number: int, record: dict[str, Any]) -> None:
        row = parse_sft(record, limit=limit)
        with transaction.atomic():
            prompt, prompt_created = _prompt_get_or_create(
                project, row.external_id, row.text, row.messages, source
            )
            again = Demonstration.objects.filter(
                prompt=prompt, text=row.completion, source=JudgmentSource.IMPORTED
            ).exists()
            if not again:
                Demonstration.objects.create(
                    project=project,
                    prompt=prompt,
                    annotator=annotator,
                    text=row.completion,
                    source=JudgmentSource.IMPORTED,
                    review_status=ReviewStatus.ACCEPTED,
                )
        result.prompts_created += int(prompt_created)
        result.demonstrations_created += int(not again)
        result.skipped_duplicates += int(again)
        if not again and not row.completion.strip():
            _record_empty_answer(result, number)

    return _import_lines(file=file, result=result, handle=handle, all_or_nothing=all_or_nothing)

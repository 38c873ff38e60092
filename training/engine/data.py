"""Training data: JSONL rows -> token ids -> length-bucketed, padded batches.

Three kinds of row: preference pairs (reward model, DPO), demonstrations (SFT) and rated
answers (KTO); the readers share one tolerant line reader and the encoders one set of
truncation rules. A pair batch of B comparisons takes one of two layouts. Packed (decoders;
collate_packed_pairs): B rows of prompt + chosen + rejected, the prompt computed once for both
answers. Sequences (encoders, which see both ways; collate_policy_pairs and
collate_reward_pairs): 2B rows, the B chosen then the B rejected, each prompt + completion,
right-padded to the longest in the batch. A batch of N single answers is likewise packed
several to a row (collate_packed_completions) or one per row (collate_completions).

Masking convention: `loss_mask[i, t]` is True exactly where `input_ids[i, t]` is a completion
token (the answer and its closing eos). It marks *targets* in input_ids, not logits, so a causal
LM caller shifts with `losses.shift_for_next_token(logits, input_ids, loss_mask)` before
`losses.sequence_logprobs`. The prompt is never empty, so the first completion token always has
a logit that predicts it.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]
Prompt = str | Messages
ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """Bad preference data; the message names the file and line (or row), the fault and the fix."""


@dataclass(frozen=True)
class PreferenceRow:
    prompt: Prompt  # plain text, or chat messages [{"role": ..., "content": ...}]
    chosen: str
    rejected: str
    weight: float = 1.0
    margin: float = 0.0
    target: float = 1.0  # probability that chosen is better; 0.5 is a tie
    source_line: int | None = None
    # The annotators' strength of preference (slight, clear, strong; None: not given). The
    # reward model adds its margin, DPO multiplies its weight (RewardConfig / DPOConfig).
    strength: str | None = None


STRENGTHS = ("slight", "clear", "strong")


@dataclass(frozen=True)
class DemonstrationRow:
    """An answer to imitate (SFT)."""

    prompt: Prompt  # as PreferenceRow's
    completion: str
    source_line: int | None = None


# Ratings on the 1-7 scale the annotation workspace uses: from this score up an answer is
# desirable (KTO). 4 is the scale's midpoint, "neither good nor bad": not an answer to imitate.
RATING_SCALE = (1, 7)
DEFAULT_DESIRABLE_SCORE = 5


@dataclass(frozen=True)
class RatingRow:
    """One answer judged on its own, good or bad (KTO): a thumbs up or down, or a 1-7 score."""

    prompt: Prompt  # as PreferenceRow's
    completion: str
    desirable: bool
    score: int | None = None  # the rating, when it was one; desirable then follows a threshold
    source_line: int | None = None


def desirable_from_score(score: int, desirable_score: int = DEFAULT_DESIRABLE_SCORE) -> bool:
    return score >= desirable_score


def with_desirable_score(rows: Sequence[RatingRow], desirable_score: int) -> list[RatingRow]:
    """Each scored row judged desirable or not by `desirable_score` (KTOConfig's threshold);
    rows labelled without a score keep their label."""
    return [
        replace(row, desirable=desirable_from_score(row.score, desirable_score))
        if row.score is not None
        else row
        for row in rows
    ]


@dataclass(frozen=True)
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]  # ends with eos unless truncated
    rejected_ids: list[int]
    weight: float
    margin: float
    target: float
    row: int  # index into the rows given to encode_pairs

    @property
    def length(self) -> int:
        """Tokens of the longer of its two sequences: its cost in a batch of sequences."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))

    @property
    def packed_length(self) -> int:
        """Tokens of its row in a packed batch: the prompt once, then both answers."""
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


@dataclass(frozen=True)
class EncodedCompletion:
    """One prompt and one answer as token ids: a demonstration (SFT) or a rated answer (KTO)."""

    prompt_ids: list[int]
    completion_ids: list[int]  # ends with eos unless truncated
    row: int  # index into the rows given to encode_completions

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def with_strength_margins(
    rows: Sequence[PreferenceRow], margins: dict[str, float]
) -> list[PreferenceRow]:
    """Each row's margin plus the margin its strength stands for (the reward model's loss)."""
    return [
        replace(row, margin=row.margin + margins.get(row.strength, 0.0)) if row.strength else row
        for row in rows
    ]


def with_strength_weights(
    rows: Sequence[PreferenceRow], weights: dict[str, float]
) -> list[PreferenceRow]:
    """Each row's weight times the weight its strength stands for (DPO's loss)."""
    return [
        replace(row, weight=row.weight * weights.get(row.strength, 1.0)) if row.strength else row
        for row in rows
    ]


# --- reading JSONL -----------------------------------------------------------------------------


def read_preference_jsonl(
    path: str | Path, *, strict: bool = False, on_skip: Callable[[str], None] | None = None
) -> list[PreferenceRow]:
    """Read TRL-style preference JSONL, one comparison per line. Blank lines are skipped.

    Formats (TRL's): {"prompt": str, "chosen": str, "rejected": str}; conversational with
    "prompt" a list of messages and "chosen"/"rejected" each one assistant message; or an implicit
    prompt: full "chosen" and "rejected" conversations that differ only in the last (assistant)
    turn. Optional fields: "weight" (> 0), "margin", "tie" (true -> target 0.5), "target" (0..1),
    "strength" (slight, clear, strong). Other fields are ignored. An empty answer is an answer (a
    silent reply can be the better one).

    A row that cannot be a pair is skipped and its message (file, line, fault) goes to `on_skip`;
    with `strict` it raises instead. A file with no usable row raises either way.
    """
    return _read_jsonl(path, _parse_record, "preference", strict=strict, on_skip=on_skip)


def read_demonstration_jsonl(
    path: str | Path, *, strict: bool = False, on_skip: Callable[[str], None] | None = None
) -> list[DemonstrationRow]:
    """Read TRL-style SFT JSONL, one demonstration per line; bad rows as read_preference_jsonl.

    Formats: conversational {"messages": [...]}, whose last turn is the assistant's answer and
    everything before it the prompt; or {"prompt": str or messages, "completion": str or one
    assistant message}. Plain {"text": ...} rows have no prompt to condition on and are skipped.
    An empty completion is kept (an answer can be to say nothing).
    """
    return _read_jsonl(path, _parse_demonstration, "demonstration", strict=strict, on_skip=on_skip)


def read_rating_jsonl(
    path: str | Path, *, strict: bool = False, on_skip: Callable[[str], None] | None = None
) -> list[RatingRow]:
    """Read TRL-style unpaired preference JSONL (KTO's), one rated answer per line.

    A demonstration's fields (read_demonstration_jsonl) plus "label" (true: desirable, false:
    undesirable) or, without a label, "score", an integer rating from 1 to 7: desirable from
    DEFAULT_DESIRABLE_SCORE up (KTOConfig.desirable_score re-draws that line). Bad rows as
    read_preference_jsonl.
    """
    return _read_jsonl(path, _parse_rating, "rating", strict=strict, on_skip=on_skip)


ParsedRow = TypeVar("ParsedRow")


def _read_jsonl(
    path: str | Path,
    parse_record: Callable[[Any, str, int], ParsedRow],
    kind: str,
    *,
    strict: bool,
    on_skip: Callable[[str], None] | None,
) -> list[ParsedRow]:
    path = Path(path)
    rows: list[ParsedRow] = []
    skipped: list[str] = []
    # Binary, decoded per line: a bad byte is reported with its line instead of failing the file.
    with path.open("rb") as file:
        for line_number, raw in enumerate(file, start=1):
            where = f"{path}, line {line_number}"
            try:
                record = _parse_line(raw, where)
                row = None if record is None else parse_record(record, where, line_number)
            except DataError as error:
                if strict:
                    raise
                skipped.append(str(error))
                if on_skip is not None:
                    on_skip(str(error))
                continue
            if row is not None:
                rows.append(row)
    if not rows:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise DataError(
            f"{path}: no {kind} rows ({len(skipped)} skipped){first}; add one JSON object per line"
        )
    return rows


def _parse_line(raw: bytes, where: str) -> Any:
    """The line's JSON value; None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{where}: not valid UTF-8 (byte {error.start}); save the file as UTF-8"
        ) from None
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{where}: invalid JSON ({error.msg} at column {error.colno}); "
            "each line must be one JSON object"
        ) from None


def _parse_record(record: Any, where: str, line_number: int) -> PreferenceRow:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in ("chosen", "rejected"):
        if field not in record:
            raise DataError(
                f'{where}: missing field "{field}"; every row needs chosen and rejected'
            )

    if "prompt" in record:
        prompt = _parse_prompt(record["prompt"], where)
        chosen = _parse_completion(record["chosen"], "chosen", where)
        rejected = _parse_completion(record["rejected"], "rejected", where)
    else:
        prompt, chosen, rejected = _split_implicit_prompt(record, where)

    if chosen.strip() == rejected.strip():
        raise DataError(
            f"{where}: chosen and rejected are the same text; nothing to learn, drop it"
        )
    target = _parse_target(record, where)
    weight = _number(record, "weight", 1.0, where)
    if weight <= 0:
        raise DataError(f'{where}: "weight" must be > 0, got {weight}; drop the row instead')
    margin = _number(record, "margin", 0.0, where)
    strength = record.get("strength")
    if strength is not None and strength not in STRENGTHS:
        raise DataError(
            f'{where}: "strength" must be one of {", ".join(STRENGTHS)} or null, got {strength!r}'
        )
    return PreferenceRow(prompt, chosen, rejected, weight, margin, target, line_number, strength)


def _parse_prompt(value: Any, where: str, row_kind: str = "comparison") -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f'{where}: "prompt" is empty; every {row_kind} needs a prompt')
        return value
    messages = _parse_messages(value, "prompt", where)
    if not messages:
        raise DataError(f'{where}: "prompt" has no messages; every {row_kind} needs a prompt')
    return messages


def _parse_completion(value: Any, field: str, where: str) -> str:
    """A completion is a string or a list holding exactly one assistant message."""
    if isinstance(value, list):
        messages = _parse_messages(value, field, where)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise DataError(
                f'{where}: "{field}" must be one assistant message, got roles '
                f"{[m['role'] for m in messages]}; multi-turn completions are not supported"
            )
        value = messages[0]["content"]
    if not isinstance(value, str):
        raise DataError(f'{where}: "{field}" must be a string or a list of messages')
    return value


def _split_implicit_prompt(record: dict[str, Any], where: str) -> tuple[Messages, str, str]:
    """{"chosen": [conversation], "rejected": [conversation]} sharing every turn but the last."""
    if not isinstance(record["chosen"], list) or not isinstance(record["rejected"], list):
        raise DataError(
            f'{where}: missing field "prompt"; plain-text rows need "prompt", "chosen" and '
            '"rejected" (only conversations may leave the prompt implicit)'
        )
    chosen = _parse_messages(record["chosen"], "chosen", where)
    rejected = _parse_messages(record["rejected"], "rejected", where)
    if len(chosen) < 2 or chosen[:-1] != rejected[:-1]:
        raise DataError(
            f'{where}: without "prompt", chosen and rejected must be conversations with the same '
            'turns before the last; add a "prompt" field or fix the shared turns'
        )
    completions = [
        _parse_completion(messages[-1:], field, where)
        for messages, field in ((chosen, "chosen"), (rejected, "rejected"))
    ]
    return chosen[:-1], completions[0], completions[1]


def _parse_demonstration(record: Any, where: str, line_number: int) -> DemonstrationRow:
    prompt, completion = _prompt_and_completion(record, where, "demonstration")
    return DemonstrationRow(prompt, completion, line_number)


def _parse_rating(record: Any, where: str, line_number: int) -> RatingRow:
    prompt, completion = _prompt_and_completion(record, where, "rating")
    label = record.get("label")
    if label is not None:
        if not isinstance(label, bool):
            raise DataError(f'{where}: "label" must be true (desirable) or false, got {label!r}')
        return RatingRow(prompt, completion, label, None, line_number)
    score = record.get("score")
    low, high = RATING_SCALE
    if score is None:
        raise DataError(
            f'{where}: needs "label" (true: a good answer, false: a bad one) or "score" '
            f"({low} to {high})"
        )
    # bool is an int in Python; true as a score is a mistake, not 1.
    if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
        raise DataError(f'{where}: "score" must be an integer from {low} to {high}, got {score!r}')
    return RatingRow(prompt, completion, desirable_from_score(score), score, line_number)


def _prompt_and_completion(record: Any, where: str, row_kind: str) -> tuple[Prompt, str]:
    """{"messages": [..., assistant turn]} or {"prompt": ..., "completion": ...}."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = _parse_messages(record["messages"], "messages", where)
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise DataError(
                f'{where}: "messages" must end with the assistant\'s answer after at least one '
                "turn to answer"
            )
        return messages[:-1], messages[-1]["content"]
    if "prompt" not in record or "completion" not in record:
        hint = ' ("text" rows have no prompt to condition on)' if "text" in record else ""
        raise DataError(
            f'{where}: every {row_kind} needs "messages", or "prompt" and "completion"{hint}'
        )
    prompt = _parse_prompt(record["prompt"], where, row_kind)
    return prompt, _parse_completion(record["completion"], "completion", where)


def _parse_messages(value: Any, field: str, where: str) -> Messages:
    if not isinstance(value, list):
        raise DataError(f'{where}: "{field}" must be a string or a list of messages')
    messages = []
    for index, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise DataError(
                f'{where}: "{field}" message {index} must be {{"role": str, "content": str}}'
            )
        if message["role"] not in ROLES:
            raise DataError(
                f'{where}: "{field}" message {index} has unknown role {message["role"]!r}; '
                f"use one of {', '.join(ROLES)}"
            )
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _parse_target(record: dict[str, Any], where: str) -> float:
    tie = record.get("tie", False)
    if not isinstance(tie, bool):
        raise DataError(f'{where}: "tie" must be true or false, got {tie!r}')
    if "target" not in record:
        return 0.5 if tie else 1.0
    target = _number(record, "target", 1.0, where)
    if not 0.0 <= target <= 1.0:
        raise DataError(f'{where}: "target" is P(chosen is better) and must be in [0, 1]')
    if tie and target != 0.5:
        raise DataError(f'{where}: "tie" is true but "target" is {target}; a tie is 0.5')
    return target


def _number(record: dict[str, Any], field: str, default: float, where: str) -> float:
    value = record.get(field, default)
    # bool is an int in Python; true as a weight is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f'{where}: "{field}" must be a finite number, got {value!r}')
    return float(value)


# --- tokenization ------------------------------------------------------------------------------


def chat_text(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """`messages` through the tokenizer's chat template, ending on the assistant's turn."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Untokenized, one conversation is always one text; the library's return type is every
    # shape apply_chat_template can return.
    if not isinstance(text, str):
        raise TypeError(f"the chat template gave {type(text).__name__}, not text")
    return text


def render_prompt(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> str:
    """The prompt as the text the model sees right before its answer."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if tokenizer.chat_template:
        return chat_text(tokenizer, messages)
    if isinstance(prompt, str):
        return prompt
    # No template (a base LM, or a BERT reward backbone): a readable transcript that still shows
    # who said what, ending the way add_generation_prompt would, on the assistant's turn.
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


def encode_prompt(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Untruncated prompt ids, exactly as training sees them; generation should use this too."""
    prefix, suffix = _special_frame(tokenizer)
    return prefix + _text_ids(render_prompt(prompt, tokenizer), tokenizer) + suffix


def encode_pairs(
    rows: Sequence[PreferenceRow],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    max_prompt_length: int,
    context_length: int | None = None,
) -> list[EncodedPair]:
    """Tokenize rows into prompt and completion ids.

    Completions end with the eos token (the policy must learn to stop; BERT has no eos, so its
    [SEP] closes the answer instead). The prompt is cut from the LEFT to max_prompt_length so the
    latest turns survive, keeping its special tokens; then each completion is cut from the right
    so prompt + completion <= max_length (a cut completion loses its eos: it did not end there).
    A prompt longer than context_length, the model's maximum context, is a DataError.

    Special tokens: a chat template writes everything the model needs (SmolLM2's has no BOS;
    Llama 3's writes it into the text), so rendered text is encoded with add_special_tokens=False.
    Without a template the prompt gets what the tokenizer adds to one text: [CLS] ... [SEP] for
    BERT, giving [CLS] prompt [SEP] answer [SEP] as in BERT's sentence pairs; <s> for Llama.
    """
    encoder = _AnswerEncoder.for_lengths(
        tokenizer,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        context_length=context_length,
    )
    pairs = []
    for index, row in enumerate(rows):
        prompt_ids, (chosen_ids, rejected_ids) = encoder.encode(
            row.prompt, (row.chosen, row.rejected), index, row.source_line
        )
        pairs.append(
            EncodedPair(
                prompt_ids, chosen_ids, rejected_ids, row.weight, row.margin, row.target, index
            )
        )
    return pairs


def encode_completions(
    rows: Sequence[DemonstrationRow | RatingRow],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    max_prompt_length: int,
    context_length: int | None = None,
) -> list[EncodedCompletion]:
    """Tokenize demonstrations or rated answers, one answer per row, by encode_pairs' rules."""
    encoder = _AnswerEncoder.for_lengths(
        tokenizer,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        context_length=context_length,
    )
    encoded = []
    for index, row in enumerate(rows):
        prompt_ids, (completion_ids,) = encoder.encode(
            row.prompt, (row.completion,), index, row.source_line
        )
        encoded.append(EncodedCompletion(prompt_ids, completion_ids, index))
    return encoded


@dataclass(frozen=True)
class _AnswerEncoder:
    """What encode_pairs and encode_completions share: the lengths checked once, then each row's
    prompt cut from the left and its answers from the right (encode_pairs says how)."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    context_length: int | None
    prefix: list[int]
    suffix: list[int]
    room: int  # prompt text tokens kept
    eos_id: int

    @classmethod
    def for_lengths(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        max_prompt_length: int,
        context_length: int | None,
    ) -> _AnswerEncoder:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        if not 1 <= max_prompt_length < max_length:
            raise ValueError(
                f"max_prompt_length must be in [1, max_length) to leave room for the answer, got "
                f"{max_prompt_length} with max_length {max_length}"
            )
        if context_length is not None and max_length > context_length:
            raise ValueError(
                f"max_length {max_length} is longer than the model's context of {context_length}"
            )
        prefix, suffix = _special_frame(tokenizer)
        room = max_prompt_length - len(prefix) - len(suffix)
        if room < 1:
            raise ValueError(
                f"max_prompt_length {max_prompt_length} leaves no room next to the tokenizer's "
                f"{len(prefix) + len(suffix)} special tokens"
            )
        eos_id = completion_end_id(tokenizer)
        return cls(tokenizer, max_length, context_length, prefix, suffix, room, eos_id)

    def encode(
        self, prompt: Prompt, answers: Sequence[str], index: int, source_line: int | None
    ) -> tuple[list[int], list[list[int]]]:
        """(prompt ids, each answer's ids) for row `index` of the rows being encoded."""
        body = _text_ids(render_prompt(prompt, self.tokenizer), self.tokenizer)  # cut from the left
        prompt_length = len(self.prefix) + len(body) + len(self.suffix)
        if self.context_length is not None and prompt_length > self.context_length:
            where = f"row {index}" + (f" (line {source_line})" if source_line else "")
            raise DataError(
                f"{where}: prompt is {prompt_length} tokens, longer than the model's context of "
                f"{self.context_length}; shorten the prompt or drop the row"
            )
        prompt_ids = self.prefix + body[-self.room :] + self.suffix
        completion_room = self.max_length - len(prompt_ids)
        answer_ids = [
            [*_text_ids(text, self.tokenizer), self.eos_id][:completion_room] for text in answers
        ]
        return prompt_ids, answer_ids


def completion_end_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that closes an answer: eos, or [SEP] for BERT-style tokenizers without one."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has neither an eos nor a sep token; set tokenizer.eos_token")


def _special_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Special ids around a prompt: none with a chat template (the template writes them);
    otherwise what the tokenizer wraps one text in: ([CLS], [SEP]) for BERT, ([<s>], []) for
    Llama, ([], []) for GPT-2, found by encoding a probe with and without them."""
    if tokenizer.chat_template:
        return [], []
    full: list[int] = tokenizer("a", add_special_tokens=True)["input_ids"]
    body: list[int] = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(body) + 1):
        if full[start : start + len(body)] == body:
            return full[:start], full[start + len(body) :]
    raise ValueError(
        "cannot tell which special tokens this tokenizer adds; give it a chat template"
    )


def _text_ids(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


# --- batching ----------------------------------------------------------------------------------


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int, bucket_factor: int = 50
) -> list[list[int]]:
    """Batches of indices into `lengths` in which sequences of similar length travel together.

    Indices are shuffled, cut into megabatches of batch_size * bucket_factor, sorted by length
    inside each megabatch and cut into batches; then the batch order is shuffled. Little padding,
    yet each epoch differs by seed. Every index appears exactly once; only the last batch may be
    short. Without shuffle the order is deterministic: index order, sorted within megabatches.
    """
    if batch_size < 1 or bucket_factor < 1:
        raise ValueError(
            f"batch_size and bucket_factor must be >= 1, got {batch_size} and {bucket_factor}"
        )
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    megabatch = batch_size * bucket_factor
    batches = []
    for start in range(0, len(order), megabatch):
        # Longest first; a multiple of batch_size, so only the final megabatch leaves a short batch.
        chunk = sorted(order[start : start + megabatch], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate_policy_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, Any]:
    """A DPO batch: B pairs -> 2B sequences, chosen rows first, then rejected (see module doc).

    input_ids, attention_mask (2B, T) long; loss_mask (2B, T) bool on completion tokens;
    answer_lengths (2B,) its row sums; weight, margin, target (B,) float32; num_tokens int, the
    non-pad tokens.
    """
    input_ids, attention_mask, loss_mask = _stack_pairs(pairs, pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "answer_lengths": loss_mask.sum(dim=1),
        **_pair_fields(pairs),
        "num_tokens": int(attention_mask.sum()),
    }


def collate_reward_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, Any]:
    """A reward-model batch: like collate_policy_pairs without loss_mask. With right padding the
    last real token of row i is at attention_mask[i].sum() - 1."""
    input_ids, attention_mask, _ = _stack_pairs(pairs, pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        **_pair_fields(pairs),
        "num_tokens": int(attention_mask.sum()),
    }


def collate_packed_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, Any]:
    """A decoder's pair batch with the prompt computed once: B rows of prompt + chosen + rejected.

    Attention is causal, except that rejected tokens do not see the chosen ones, and the
    rejected answer's positions restart where the prompt ends: each answer sees exactly the
    prompt and itself, as if it were alone, while the prompt goes through the model once
    instead of twice (a third of a chat pair's tokens on SmolLM2, whose template adds a system
    prompt). Each row is only as long as its pair's real tokens, so bucketed batches waste
    little on padding, where two padded sequences per pair would pad the shorter answer.

    input_ids, position_ids (B, T) long; attention_mask (B, 1, T, T) bool, True where the query
    (row) may attend the key (column); pads attend causally and are never read.
    Per answer token, M in all, flat indices into the B*T positions: targets (M,) the token,
    predictors (M,) the hidden state that predicts it (the token before; for an answer's first
    token, the prompt's last); owners (M,) its answer, i for pair i's chosen and B + i for its
    rejected (the order of collate_policy_pairs). answer_lengths (2B,) tokens per answer;
    last_positions (2B,) each answer's last token, where a reward model scores.
    weight, margin, target (B,) float32; num_tokens int, the non-pad tokens.
    """
    if not pairs:
        raise ValueError("cannot collate an empty batch")
    count, width = len(pairs), max(pair.packed_length for pair in pairs)
    input_ids = torch.full((count, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((count, width), dtype=torch.long)
    attention_mask = torch.ones((width, width), dtype=torch.bool).tril().repeat(count, 1, 1)
    targets: list[int] = []
    predictors: list[int] = []
    owners: list[int] = []
    last_positions = [0] * (2 * count)
    for i, pair in enumerate(pairs):
        prompt, chosen, rejected = (
            len(pair.prompt_ids),
            len(pair.chosen_ids),
            len(pair.rejected_ids),
        )
        end = prompt + chosen + rejected
        input_ids[i, :end] = torch.tensor(pair.prompt_ids + pair.chosen_ids + pair.rejected_ids)
        position_ids[i, : prompt + chosen] = torch.arange(prompt + chosen)
        position_ids[i, prompt + chosen : end] = torch.arange(prompt, prompt + rejected)
        attention_mask[i, prompt + chosen : end, prompt : prompt + chosen] = False
        row = i * width
        for owner, start, size in ((i, prompt, chosen), (count + i, prompt + chosen, rejected)):
            tokens = range(row + start, row + start + size)
            targets += tokens
            predictors += [row + prompt - 1, *tokens[:-1]]
            owners += [owner] * size
            last_positions[owner] = row + start + size - 1
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": attention_mask[:, None],
        "targets": torch.tensor(targets, dtype=torch.long),
        "predictors": torch.tensor(predictors, dtype=torch.long),
        "owners": torch.tensor(owners, dtype=torch.long),
        "answer_lengths": torch.tensor(
            [len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs]
        ),
        "last_positions": torch.tensor(last_positions, dtype=torch.long),
        **_pair_fields(pairs),
        "num_tokens": sum(pair.packed_length for pair in pairs),
    }


def collate_completions(items: Sequence[EncodedCompletion], pad_id: int) -> dict[str, Any]:
    """A batch of N answers, one right-padded row each (prompt + completion).

    input_ids, attention_mask (N, T) long; loss_mask (N, T) bool on completion tokens;
    answer_lengths (N,) its row sums; num_tokens int, the non-pad tokens.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    input_ids, attention_mask, loss_mask = _stack_sequences(
        [(item.prompt_ids, item.completion_ids) for item in items], pad_id
    )
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "answer_lengths": loss_mask.sum(dim=1),
        "num_tokens": int(attention_mask.sum()),
    }


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices into `lengths` grouped into rows of at most `capacity` tokens, so that the batch,
    every row padded to the longest, holds the fewest pad tokens (on a tie, the fewest rows).

    For each row count, from the fewest that could hold the total up to one row per index, the
    longest sequence goes first into the emptiest row (which evens the rows out); a count whose
    rows overflow is passed over. One index per row always fits when every length does.
    """
    if any(length > capacity for length in lengths):
        raise ValueError(f"a sequence is longer than the row capacity of {capacity} tokens")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    best: list[list[int]] = []
    best_area = math.inf
    for count in range(max(1, math.ceil(sum(lengths) / capacity)), len(order) + 1):
        rows: list[list[int]] = [[] for _ in range(count)]
        fill = [0] * count
        for index in order:
            emptiest = fill.index(min(fill))
            rows[emptiest].append(index)
            fill[emptiest] += lengths[index]
        if max(fill) <= capacity and count * max(fill) < best_area:
            best, best_area = rows, count * max(fill)
    return best


def collate_packed_completions(
    items: Sequence[EncodedCompletion], pad_id: int, *, max_length: int
) -> dict[str, Any]:
    """A decoder's batch of N answers packed several to a row of at most max_length tokens
    (pack_rows), each prompt + completion seeing only itself.

    Attention is causal inside each packed sequence and blocked between them, and positions
    restart at 0 for each, so every answer is scored exactly as if it were alone in its row: the
    same numbers as collate_completions with fewer pad tokens. The layout is
    collate_packed_pairs' (models.packed_completion_logprobs reads either):
    input_ids, position_ids (R, T) long; attention_mask (R, 1, T, T) bool, True where the query
    (row) may attend the key (column); pads attend causally and are never read. Per answer token,
    M in all, flat indices into the R*T positions: targets (M,) the token, predictors (M,) the
    position before it, owners (M,) which of the N answers, in the order given. answer_lengths
    (N,) tokens per answer; num_tokens int, the non-pad tokens.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    rows = pack_rows([item.length for item in items], max_length)
    width = max(sum(items[i].length for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.ones((width, width), dtype=torch.bool).tril().repeat(len(rows), 1, 1)
    targets: list[int] = []
    owners: list[int] = []
    for r, row in enumerate(rows):
        start = 0
        for owner in row:
            item = items[owner]
            end = start + item.length
            input_ids[r, start:end] = torch.tensor(item.prompt_ids + item.completion_ids)
            position_ids[r, start:end] = torch.arange(item.length)
            attention_mask[r, start:end, :start] = False  # not the sequences packed before it
            first_answer = r * width + start + len(item.prompt_ids)
            targets += range(first_answer, r * width + end)
            owners += [owner] * len(item.completion_ids)
            start = end
    target_positions = torch.tensor(targets, dtype=torch.long)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": attention_mask[:, None],
        "targets": target_positions,
        # The prompt is never empty, so the position before an answer token is in its sequence.
        "predictors": target_positions - 1,
        "owners": torch.tensor(owners, dtype=torch.long),
        "answer_lengths": torch.tensor([len(item.completion_ids) for item in items]),
        "num_tokens": sum(item.length for item in items),
    }


def _stack_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """B pairs -> input_ids (2B, T), attention_mask (2B, T), loss_mask (2B, T), right-padded."""
    if not pairs:
        raise ValueError("cannot collate an empty batch")
    sequences = [(p.prompt_ids, p.chosen_ids) for p in pairs]
    sequences += [(p.prompt_ids, p.rejected_ids) for p in pairs]
    return _stack_sequences(sequences, pad_id)


def _stack_sequences(
    sequences: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """N (prompt, completion) -> input_ids, attention_mask, loss_mask (N, T), right-padded."""
    width = max(len(prompt) + len(completion) for prompt, completion in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    loss_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, (prompt, completion) in enumerate(sequences):
        end = len(prompt) + len(completion)
        input_ids[i, :end] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[i, :end] = 1
        loss_mask[i, len(prompt) : end] = True
    return input_ids, attention_mask, loss_mask


def _pair_fields(pairs: Sequence[EncodedPair]) -> dict[str, Tensor]:
    """weight, margin, target: (B,) float32 each."""
    return {
        field: torch.tensor([getattr(p, field) for p in pairs], dtype=torch.float32)
        for field in ("weight", "margin", "target")
    }

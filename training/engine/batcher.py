"""Continuous batching for serving: requests join and leave one running batch.

`generate` samples a fixed set of prompts; a server gets requests at any time and must not make
a new one wait for the batch before it to finish. Here every row of every request shares one
KV cache and one forward per decode step:

  step():
    1. rows whose request was cancelled end; finished rows leave the batch (the cache is
       rebuilt without them) once enough have finished or new rows are waiting
    2. waiting requests are prefilled together (each distinct prompt once, as in generate),
       their first token sampled from the prefill, and their keys copied into the batch's cache
    3. one decode step for every row in the batch; each row's new text goes to its request

The cache is one buffer per layer, [rows, kv_heads, columns, head_dim]. Every row writes its
next key at the same column `t`; a row's prompt sits right-aligned before the column at which
it joined, and the attention mask hides the columns before it. Rebuilding (when rows join or
leave, or the columns run out) right-aligns every row again and drops the columns no row needs.

Each row draws its random numbers from its own stream seeded from (seed, 0, choice), the same
stream `generate` gives prompt 0, sample `choice`: a request with a seed writes what `generate`
writes for that prompt alone, whatever else shares the batch (up to floating-point effects of
batching, as there). Per-row adapters go through peft's mixed-batch LoRA (`adapter_names`):
one copy of the base weights serves every version at once.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase
from transformers.cache_utils import Cache

from training.engine.generate import (
    BufferLayer,
    forward_signature,
    new_cache,
    row_seed,
    sample_tokens,
    stop_token_ids,
)
from training.engine.models import POLICY_ADAPTER, PolicyModel, context_length, read_artifact
from training.engine.precision import autocast, autocast_dtype

logger = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch
# Finished rows leave the batch once this share of it has finished (or when rows join, since
# the cache is rebuilt then anyway); until then they ride along masked, as in generate.
DROP_FINISHED_FRACTION = 0.25
# Prompt tokens prefilled per step: a burst of long prompts must not stall the rows already
# decoding for more than about one such prefill.
PREFILL_TOKENS_PER_STEP = 4096
# Cache columns added past the longest prompt when the batch is rebuilt.
ROOM_STEP = 256


class RequestError(ValueError):
    """A request the batcher cannot take (too long for the model, an unknown adapter)."""


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None  # None: a fresh random stream per request
    stop: tuple[str, ...] = ()  # strings that end a choice; not part of its text


@dataclass(frozen=True)
class ChoiceEvent:
    """New text of one choice. `finish_reason` is set on the choice's last event: stop (an
    end-of-turn token or a stop string), length (max_new_tokens), cancelled or error."""

    choice: int
    text: str
    token_count: int  # tokens of this choice so far
    finish_reason: str | None = None


@dataclass(eq=False)
class Request:
    """One request of `n` choices. `on_event` is called from the batcher's thread: keep it
    short (hand the event to another thread or event loop)."""

    prompt_ids: list[int]
    params: SamplingParams
    on_event: Callable[[ChoiceEvent], None]
    n: int = 1
    adapter: str | None = None  # a name given to load_adapter; None is the base model
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass(eq=False)
class _Row:
    request: Request
    choice: int
    uniforms: torch.Tensor  # [max_new_tokens]
    token_ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the decoded text already sent
    finish_reason: str | None = None


@dataclass
class _Batch:
    """The rows decoding together and their cache; `column` is where every row writes next."""

    rows: list[_Row]
    cache: Cache
    layers: list[BufferLayer]
    mask: torch.Tensor  # [B, C] 1 where a row has a real token
    last_tokens: torch.Tensor  # [B] the token each row feeds next
    positions: torch.Tensor  # [B] the position id of that token
    column: int

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]


class ContinuousBatcher:
    """Owns a policy model and serves requests through one running batch.

    Thread-safe entry points: `submit`, `load_adapter`, `unload_adapter` (they queue work);
    `step` and `serve_forever` run on the one thread that owns the model.
    """

    def __init__(
        self,
        model: PolicyModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_rows: int = 32,
        precision: str = "auto",
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_rows = max_rows
        self.precision = precision
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.stop_ids = torch.tensor(stop_token_ids(model, tokenizer), device=self.device)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(self.stop_ids[0])
        )
        self.context = context_length(model) or 2048
        self._signature = forward_signature(model)
        self._waiting: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._pending: list[Request] = []  # taken from the queue, not yet prefilled
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._batch: _Batch | None = None
        self._wake = threading.Event()
        self.adapters: dict[str, Path] = {}
        model.eval()
        _hold_linear_weights_in(model, autocast_dtype(precision, self.device))

    # --- entry points (any thread) ---------------------------------------------------------------

    def submit(self, request: Request) -> None:
        if not request.prompt_ids:
            raise RequestError("The prompt encodes to no tokens.")
        if request.n < 1:
            raise RequestError("n must be at least 1.")
        needed = len(request.prompt_ids) + request.params.max_new_tokens
        if needed > self.context:
            raise RequestError(
                f"The prompt ({len(request.prompt_ids)} tokens) and max_tokens "
                f"({request.params.max_new_tokens}) exceed the model's context of "
                f"{self.context} tokens."
            )
        self._waiting.put(request)
        self._wake.set()

    def load_adapter(self, name: str, path: str | Path) -> threading.Event:
        """Queue loading a policy adapter under `name`; the event is set once it is loaded (or
        failed: then `name` is not in `adapters`). Names are never reloaded in place."""
        done = threading.Event()

        def load() -> None:
            try:
                if name not in self.adapters:
                    self._load_adapter_now(name, Path(path))
            except Exception:
                logger.exception("could not load adapter %s from %s", name, path)
            finally:
                done.set()

        self._commands.put(load)
        self._wake.set()
        return done

    def unload_adapter(self, name: str) -> None:
        """Queue removing an adapter; it goes once no row in the batch uses it."""
        self._commands.put(lambda: self._unload_when_unused(name))
        self._wake.set()

    @property
    def busy(self) -> bool:
        return self._batch is not None or bool(self._pending) or not self._waiting.empty()

    # --- the loop (the model's thread) -----------------------------------------------------------

    def serve_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self.busy and self._commands.empty():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
            try:
                self.step()
            except Exception:
                logger.exception("serving step failed; the rows in the batch end with an error")
                self._fail_everything()

    def run_until_idle(self) -> None:
        """Step until every submitted request has finished (tests, offline use)."""
        while self.busy or not self._commands.empty():
            self.step()

    def step(self) -> None:
        for _ in range(self._commands.qsize()):  # what was queued before this step
            self._commands.get()()
        while not self._waiting.empty():
            self._pending.append(self._waiting.get())
        self._end_cancelled()
        with torch.inference_mode(), autocast(self.precision, self.device):
            joiners = self._take_joiners()
            if joiners or self._should_drop_finished():
                self._rebuild([self._prefill(group) for group in _length_groups(joiners)])
            elif self._batch is not None and self._batch.column >= self._batch.capacity:
                self._rebuild([])
            if self._batch is not None:
                self._decode_step(self._batch)

    # --- adapters --------------------------------------------------------------------------------

    def _load_adapter_now(self, name: str, path: Path) -> None:
        read_artifact(path, expected=(POLICY_ADAPTER,))
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
            self._signature = forward_signature(self.model)
        self.model.eval()
        self.adapters[name] = path

    def _unload_when_unused(self, name: str) -> None:
        if name not in self.adapters:
            return
        rows = self._batch.rows if self._batch is not None else []
        in_use = any(r.request.adapter == name for r in rows if r.finish_reason is None) or any(
            r.adapter == name for r in self._pending
        )
        if in_use:
            self._commands.put(lambda: self._unload_when_unused(name))  # try again next step
            return
        assert isinstance(self.model, PeftModel)
        if len(self.adapters) > 1:
            with warnings.catch_warnings():  # "active adapter deleted": rows name theirs
                warnings.simplefilter("ignore", UserWarning)
                self.model.delete_adapter(name)
        # The last adapter stays in the weights (peft keeps one); it is simply never named.
        del self.adapters[name]

    # --- joining ---------------------------------------------------------------------------------

    def _end_cancelled(self) -> None:
        for request in [r for r in self._pending if r.cancelled.is_set()]:
            self._pending.remove(request)
            for choice in range(request.n):
                request.on_event(ChoiceEvent(choice, "", 0, "cancelled"))
        if self._batch is not None:
            for row in self._batch.rows:
                if row.finish_reason is None and row.request.cancelled.is_set():
                    self._finish(row, "cancelled")

    def _take_joiners(self) -> list[Request]:
        """Pending requests that fit in the batch now, oldest first, within the prefill budget."""
        live = sum(r.finish_reason is None for r in self._batch.rows) if self._batch else 0
        taken: list[Request] = []
        refused: list[Request] = []
        tokens = 0
        for request in self._pending:
            if request.adapter is not None and request.adapter not in self.adapters:
                self._fail_request(request, f"adapter {request.adapter!r} is not loaded")
                refused.append(request)
                continue
            if live + request.n > self.max_rows and (live or taken):
                break
            if tokens and tokens + len(request.prompt_ids) > PREFILL_TOKENS_PER_STEP:
                break
            taken.append(request)
            live += request.n
            tokens += len(request.prompt_ids)
        self._pending = [r for r in self._pending if r not in taken and r not in refused]
        return taken

    def _should_drop_finished(self) -> bool:
        if self._batch is None:
            return False
        done = sum(r.finish_reason is not None for r in self._batch.rows)
        return done > 0 and done >= DROP_FINISHED_FRACTION * len(self._batch.rows)

    def _prefill(self, requests: list[Request]) -> _Batch:
        """One forward over the joiners' prompts; returns them as a batch of their own, each
        row's first token already sampled (rows that end on it are finished)."""
        prompts = [r.prompt_ids for r in requests]
        width = max(len(ids) for ids in prompts)
        rows = [
            _Row(request, choice, _uniforms(request.params, choice))
            for request in requests
            for choice in range(request.n)
        ]
        expand_list = [i for i, request in enumerate(requests) for _ in range(request.n)]
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prompts):  # left padding: every prompt ends at the last column
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            prompt_mask[i, width - len(ids) :] = 1
        input_ids, prompt_mask = input_ids.to(self.device), prompt_mask.to(self.device)
        positions = (prompt_mask.cumsum(-1) - 1).clamp_(min=0)  # [U, P]
        expand = torch.tensor(expand_list, device=self.device)
        needs_expand = len(rows) > len(prompts)
        cache = new_cache(self.model, width, expand if needs_expand else None)
        logits = self._forward(
            input_ids, prompt_mask, positions, cache,
            [r.adapter for r in requests],
        )[:, -1]  # fmt: skip  # [U, V]
        layers = [layer for layer in cache.layers if isinstance(layer, BufferLayer)]
        batch = _Batch(
            rows=rows,
            cache=cache,
            layers=layers,
            mask=prompt_mask[expand],
            last_tokens=torch.zeros(len(rows), dtype=torch.long, device=self.device),
            positions=positions[expand, -1] + 1,
            column=width,
        )
        self._sample_into(batch, logits[expand])
        return batch

    def _rebuild(self, joined: list[_Batch]) -> None:
        """One batch of the unfinished rows of the running batch and the joiners, every row
        right-aligned at the new write column, with room for the longest remaining answer."""
        parts = [b for b in (self._batch, *joined) if b is not None]
        kept = [
            (part, [i for i, r in enumerate(part.rows) if r.finish_reason is None])
            for part in parts
        ]
        kept = [(part, index) for part, index in kept if index]
        if not kept:
            self._batch = None
            return
        # Columns each part needs: from its earliest real token still in use to its column.
        spans = [
            part.column - _first_real_column(part.mask[index], part.column) for part, index in kept
        ]
        width = max(spans)
        room = max(
            part.rows[i].request.params.max_new_tokens - len(part.rows[i].token_ids)
            for part, index in kept
            for i in index
        )
        # Columns for the next ROOM_STEP tokens at most: a request may ask thousands it never
        # writes, and a batch rebuilt when it runs out costs less than a buffer that large.
        capacity = width + max(1, min(room, ROOM_STEP))
        reference = kept[0][0].layers[0].key_buffer
        heads, head_dim = reference.shape[1], reference.shape[3]
        total = sum(len(index) for _, index in kept)
        new_layers: list[BufferLayer] = []
        for layer_index in range(len(kept[0][0].layers)):
            keys = reference.new_zeros(total, heads, capacity, head_dim)
            values = torch.zeros_like(keys)
            offset = 0
            for (part, index), span in zip(kept, spans, strict=True):
                layer = part.layers[layer_index]
                rows_index = torch.tensor(index, device=self.device)
                source = slice(part.column - span, part.column)
                target = slice(width - span, width)
                keys[offset : offset + len(index), :, target] = layer.key_buffer[
                    rows_index, :, source
                ]
                values[offset : offset + len(index), :, target] = layer.value_buffer[
                    rows_index, :, source
                ]
                offset += len(index)
            new_layers.append(BufferLayer.of(keys, values, width))
        mask = torch.zeros(total, capacity, dtype=torch.long, device=self.device)
        offset = 0
        for (part, index), span in zip(kept, spans, strict=True):
            rows_index = torch.tensor(index, device=self.device)
            mask[offset : offset + len(index), width - span : width] = part.mask[rows_index][
                :, part.column - span : part.column
            ]
            offset += len(index)
        self._batch = _Batch(
            rows=[part.rows[i] for part, index in kept for i in index],
            cache=Cache(layers=list[Any](new_layers)),
            layers=new_layers,
            mask=mask,
            last_tokens=torch.cat([part.last_tokens[index] for part, index in kept]),
            positions=torch.cat([part.positions[index] for part, index in kept]),
            column=width,
        )

    # --- decoding --------------------------------------------------------------------------------

    def _decode_step(self, batch: _Batch) -> None:
        column = batch.column
        batch.mask[:, column] = 1
        logits = self._forward(
            batch.last_tokens.unsqueeze(-1), batch.mask[:, : column + 1],
            batch.positions.unsqueeze(-1), batch.cache,
            [row.request.adapter for row in batch.rows],
        )[:, -1]  # fmt: skip  # [B, V]
        batch.column += 1
        batch.positions += 1
        self._sample_into(batch, logits)
        if all(row.finish_reason is not None for row in batch.rows):
            self._batch = None

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Cache,
        adapters: Sequence[str | None],
    ) -> torch.Tensor:
        extra: dict[str, object] = {}
        if self._signature.logits_to_keep:
            extra["logits_to_keep"] = 1
        if isinstance(self.model, PeftModel):
            extra["adapter_names"] = [a or BASE_ADAPTER for a in adapters]
        logits: torch.Tensor = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
            use_cache=True, **{self._signature.cache_name: cache}, **extra,
        ).logits  # fmt: skip
        return logits

    def _sample_into(self, batch: _Batch, logits: torch.Tensor) -> None:
        """Sample each live row's next token from logits [B, V], grouped by sampling settings."""
        new = torch.full((len(batch.rows),), self.pad_id, dtype=torch.long)
        groups: dict[tuple[float, int, float], list[int]] = {}
        for i, row in enumerate(batch.rows):
            if row.finish_reason is None:
                p = row.request.params
                groups.setdefault((p.temperature, p.top_k, p.top_p), []).append(i)
        for (temperature, top_k, top_p), index in groups.items():
            uniforms = torch.stack(
                [batch.rows[i].uniforms[len(batch.rows[i].token_ids)] for i in index]
            )
            chosen = sample_tokens(
                logits[index], uniforms, temperature=temperature, top_k=top_k, top_p=top_p
            )
            new[index] = chosen.cpu()
        batch.last_tokens = new.to(self.device)
        stops = set(self.stop_ids.tolist())
        for i, row in enumerate(batch.rows):
            if row.finish_reason is None:
                self._append(row, int(new[i]), stops)

    def _append(self, row: _Row, token: int, stops: set[int]) -> None:
        params = row.request.params
        row.token_ids.append(token)
        if token in stops:
            self._emit(row, final=True, reason="stop")
            return
        text = self._text(row)
        cut = _first_stop(text, params.stop, start=max(0, row.emitted - _longest(params.stop)))
        if cut is not None:
            self._emit(row, final=True, reason="stop", text=text[:cut])
        elif len(row.token_ids) >= params.max_new_tokens:
            self._emit(row, final=True, reason="length", text=text)
        else:
            self._emit(row, final=False, text=text)

    def _text(self, row: _Row) -> str:
        text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence decodes to one text
        return text

    def _emit(self, row: _Row, *, final: bool, reason: str = "", text: str | None = None) -> None:
        text = self._text(row) if text is None else text
        end = len(text) if final else _safe_end(text, row.request.params.stop)
        delta = text[row.emitted : end] if end > row.emitted else ""
        row.emitted = max(row.emitted, end)
        if final:
            row.finish_reason = reason
        if delta or final:
            event = ChoiceEvent(row.choice, delta, len(row.token_ids), reason if final else None)
            row.request.on_event(event)

    def _finish(self, row: _Row, reason: str) -> None:
        row.finish_reason = reason
        row.request.on_event(ChoiceEvent(row.choice, "", len(row.token_ids), reason))

    # --- failures --------------------------------------------------------------------------------

    def _fail_request(self, request: Request, why: str) -> None:
        logger.warning("request refused: %s", why)
        request.cancelled.set()
        for choice in range(request.n):
            request.on_event(ChoiceEvent(choice, "", 0, "error"))

    def _fail_everything(self) -> None:
        batch, self._batch = self._batch, None
        for row in batch.rows if batch else []:
            if row.finish_reason is None:
                self._finish(row, "error")


# --- small pure helpers -------------------------------------------------------------------------


# A prefill pads every prompt of its group to the longest: prompts of very different lengths are
# prefilled in separate forwards (same step) once padding would add this share of real tokens.
PREFILL_PADDING_SHARE = 0.25


def _length_groups(requests: list[Request]) -> list[list[Request]]:
    """Joiners in groups of similar prompt length, each group one prefill forward."""
    ordered = sorted(requests, key=lambda r: len(r.prompt_ids))
    groups: list[list[Request]] = []
    for request in ordered:
        if groups:
            group = [*groups[-1], request]
            real = sum(len(r.prompt_ids) for r in group)
            padded = len(request.prompt_ids) * len(group)  # the longest is the newest
            if padded - real <= PREFILL_PADDING_SHARE * real:
                groups[-1] = group
                continue
        groups.append([request])
    return groups


def _uniforms(params: SamplingParams, choice: int) -> torch.Tensor:
    seed = params.seed if params.seed is not None else secrets.randbits(62)
    generator = torch.Generator().manual_seed(row_seed(seed, 0, choice))
    return torch.rand(params.max_new_tokens, generator=generator)


def _first_real_column(mask: torch.Tensor, column: int) -> int:
    """The first column any row of mask [b, C] uses before `column`."""
    used = mask[:, :column].any(0).nonzero()
    return int(used[0]) if len(used) else column


def _longest(stops: Sequence[str]) -> int:
    return max((len(s) for s in stops), default=0)


def _first_stop(text: str, stops: Sequence[str], *, start: int) -> int | None:
    """Where the earliest stop string begins in text[start:], or None."""
    found = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _safe_end(text: str, stops: Sequence[str]) -> int:
    """How much of text can be sent now: not a trailing replacement character (half of a
    multi-byte character), nor a tail that may be the start of a stop string."""
    end = len(text)
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end = min(end, len(text[:end]) - size)
                break
    return end


def _hold_linear_weights_in(model: torch.nn.Module, dtype: torch.dtype | None) -> None:
    """Cast every Linear weight to `dtype` for good: a serving model never trains, and
    autocast would otherwise recast the frozen weights at every step (see generate)."""
    if dtype is None:
        return
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Linear) and weight is not None:
                weight.data = weight.data.to(dtype)

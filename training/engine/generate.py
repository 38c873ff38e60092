"""Batched sampling with a KV cache and left padding: the policy writes the answers to compare.

Our own loop rather than `model.generate`: on a small CPU the generic loop's overheads (a
torch.cat of the whole KV cache per layer and step, a full sort of the vocabulary for top-p,
autocast recasting every weight at every step) cost more than the model. Reads top to bottom:

  prompts -> chat template -> token ids (truncated from the left)
  rows = (prompt, sample) pairs, sorted by prompt length, cut into batches of `batch_size`
  per batch: one forward over the left-padded prompts (each distinct prompt once), then one
  token per step through a preallocated KV cache; rows leave the batch as they end.

Determinism: each row draws its random numbers from its own stream, seeded from
(config.seed, prompt index, sample index), one uniform per token. So the same prompts, config and
model on the same machine give the same text; a different seed gives different text; and a row's
text does not depend on which rows share its batch nor on `batch_size`, up to the floating-point
effects of batching itself (padding changes matmul shapes, which in bf16 can flip a token that
sits on a sampling boundary). Temperature 0 is greedy and uses no randomness.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

from training.engine.config import GenerationConfig
from training.engine.data import chat_text
from training.engine.precision import autocast, autocast_dtype

if TYPE_CHECKING:
    from training.engine.models import PolicyModel

Prompt = str | list[dict[str, str]]

# Drop finished rows from the batch once this share of it has finished. A step's cost falls
# slowly with fewer rows (the weights are read once per step whatever the batch), and each drop
# copies the KV cache: on SmolLM2-135M (batch 16, MT-bench) a quarter beat both never dropping
# and dropping at every finished row.
DROP_FINISHED_FRACTION = 0.25
# Progress inside a batch every this many decode steps (about a second on SmolLM2 on 2 cores).
PROGRESS_EVERY_STEPS = 16


@dataclass
class Sample:
    text: str
    token_ids: list[int]  # generated ids; ends with the end-of-sequence id when finished
    token_count: int  # len(token_ids): padding never counts
    finished: bool  # False when cut at max_new_tokens


@dataclass
class GenerationResult:
    samples: list[list[Sample]]  # per prompt, in the given order, samples_per_prompt each
    seconds: float
    new_tokens: int
    tokens_per_second: float
    prompt_tokens: int  # each prompt counted once, after truncation
    cancelled: bool = False  # should_stop ended it early; unfinished prompts hold fewer samples


# --- prompts -------------------------------------------------------------------------------------


def render_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]
) -> tuple[list[str], bool]:
    """Prompt texts, and whether they came from the chat template (then they carry their own
    special tokens). A plain string becomes one user message."""
    if not getattr(tokenizer, "chat_template", None):
        texts = [p for p in prompts if isinstance(p, str)]
        if len(texts) < len(prompts):
            raise ValueError("chat messages need a tokenizer with a chat template")
        return texts, False
    texts = [
        chat_text(tokenizer, [{"role": "user", "content": p}] if isinstance(p, str) else p)
        for p in prompts
    ]
    return texts, True


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], max_length: int
) -> list[list[int]]:
    """Token ids per prompt, cut from the left: the end of a prompt is what the answer follows."""
    texts, templated = render_prompts(tokenizer, prompts)
    encoded = tokenizer(texts, add_special_tokens=not templated)["input_ids"]
    ids = [list(row[-max_length:]) for row in encoded]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:
        raise ValueError(f"prompt(s) {empty} encode to no tokens")
    return ids


def stop_token_ids(model: PolicyModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's end-of-sequence id plus any the model's generation config adds
    (instruct models often end turns with a token other than eos)."""
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found = [tokenizer.eos_token_id, *(extra if isinstance(extra, list) else [extra])]
    ids = sorted({int(i) for i in found if i is not None})
    if not ids:
        raise ValueError("neither the tokenizer nor the model defines an end-of-sequence token")
    return ids


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed per row, stable across runs and platforms (Python's hash() is salted)."""
    digest = hashlib.blake2b(f"{seed}:{prompt_index}:{sample_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def row_uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """[rows, steps] uniforms in [0, 1): one per sampled token, drawn up front per row."""
    return torch.stack(
        [torch.rand(steps, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


# --- sampling ------------------------------------------------------------------------------------


def sample_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor, *, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    """Next token per row by inverse-CDF sampling; greedy when temperature == 0.

    logits: [B, V], uniforms: [B] in [0, 1) -> [B] token ids. A given uniform always picks the
    same token, which is what makes a row's text reproducible from its own seed.
    """
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [B, V]
    if top_k > 0 or top_p < 1:
        probs = probs.masked_fill(probs < nucleus_threshold(probs, top_k, top_p), 0.0)
    cdf = probs.cumsum(-1)  # [B, V] in vocabulary order: no sort needed
    total = cdf[:, -1:]  # [B, 1] the kept mass
    # Strictly below the total, so that the first token whose cdf passes the target is one with
    # probability > 0 even when u * total rounds up.
    target = torch.minimum(
        uniforms.to(cdf).unsqueeze(-1) * total, total.nextafter(cdf.new_zeros(()))
    )
    return torch.searchsorted(cdf, target, right=True).squeeze(-1)


# Widths of the top slice searched for the nucleus, widest last. Sorting the whole vocabulary
# costs ~28 ms per step for 16 rows x 49k tokens on 2 cores (a third of a decode step), the top
# 256 ~1.3 ms, and at temperature 0.8 most rows' nucleus fits in it.
NUCLEUS_WIDTHS = (256, 4096)


def nucleus_threshold(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Per-row probability a token needs to survive top-k then top-p (top-p relative to the mass
    top-k kept, as in HF's warpers). probs: [B, V] -> [B, 1].

    Tokens tied with the last one of the nucleus all survive (a sort would keep some of them).
    Rows whose nucleus is wider than the searched slice are searched again, wider.
    """
    vocab = probs.shape[-1]
    widths = [top_k] if top_k > 0 else [w for w in NUCLEUS_WIDTHS if w < vocab] + [vocab]
    threshold = probs.new_zeros(probs.shape[0], 1)
    pending = torch.arange(probs.shape[0], device=probs.device)  # rows without a threshold yet
    for width in widths:
        values = probs[pending].topk(min(width, vocab), dim=-1).values  # [b, K] descending
        mass = values.sum(-1, keepdim=True) if top_k > 0 else 1.0  # what top-p is relative to
        before = (values.cumsum(-1) - values) / mass  # [b, K] mass ahead of each token
        kept = (before < top_p).sum(-1, keepdim=True).clamp_(min=1)  # [b, 1]
        threshold[pending] = values.gather(-1, kept - 1)
        # The nucleus goes on past the slice only if all of it was kept and it is short of top_p.
        short = (kept.squeeze(-1) == values.shape[-1]) & ((before[:, -1] + values[:, -1]) < top_p)
        if top_k > 0 or width >= vocab or not bool(short.any()):
            break
        pending = pending[short]
    return threshold


# --- KV cache ------------------------------------------------------------------------------------


class BufferLayer(DynamicLayer):  # type: ignore[no-untyped-call]  # untyped __init_subclass__
    """One layer's KV cache, preallocated for the whole batch: new keys are written in place and
    the layer returns views, instead of DynamicLayer's torch.cat of the whole cache every step
    (a third of a CPU decode step at 30 layers)."""

    def __init__(self, max_length: int, expand: torch.Tensor | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # untyped in transformers
        self.max_length = max_length
        self.length = 0
        # Row -> distinct-prompt index: the prefill runs each distinct prompt once and the
        # samples of a prompt copy its keys.
        self.expand = expand

    @classmethod
    def of(cls, keys: torch.Tensor, values: torch.Tensor, length: int) -> BufferLayer:
        """A layer over buffers filled elsewhere ([B, kv_heads, C, head_dim]), `length` used."""
        layer = cls(keys.shape[2], None)
        layer.key_buffer, layer.value_buffer = keys, values
        layer.device = keys.device
        layer.is_initialized = True
        layer.length = length
        layer.keys, layer.values = keys[:, :, :length], values[:, :, :length]
        return layer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows = len(self.expand) if self.expand is not None else key_states.shape[0]
        _, heads, _, key_dim = key_states.shape
        self.key_buffer = key_states.new_empty(rows, heads, self.max_length, key_dim)
        self.value_buffer = value_states.new_empty(
            rows, heads, self.max_length, value_states.shape[-1]
        )
        self.device = key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # key_states: [B or U, kv_heads, new, head_dim]
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        prefill_keys, prefill_values = key_states, value_states
        if self.expand is not None:
            key_states, value_states = key_states[self.expand], value_states[self.expand]
            self.expand = None
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.length = end
        self.keys = self.key_buffer[:, :, :end]
        self.values = self.value_buffer[:, :, :end]
        if start == 0:
            return prefill_keys, prefill_values  # the prefill attends per distinct prompt
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer = self.key_buffer[indices]
        self.value_buffer = self.value_buffer[indices]
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]


def new_cache(model: PolicyModel, max_length: int, expand: torch.Tensor | None) -> Cache:
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[BufferLayer(max_length, expand) for _ in range(layers)])


@dataclass(frozen=True)
class ForwardSignature:
    cache_name: str  # transformers 5.x renamed past_key_values to cache
    logits_to_keep: bool


def forward_signature(model: PolicyModel) -> ForwardSignature:
    get_base_model = getattr(model, "get_base_model", None)  # peft
    base = get_base_model() if get_base_model is not None else model
    params = inspect.signature(base.forward).parameters
    return ForwardSignature(
        cache_name="cache" if "cache" in params else "past_key_values",
        logits_to_keep="logits_to_keep" in params,
    )


# --- precision -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _linear_weights_cast_once(model: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Hold every Linear weight in `dtype` for the duration, then put the originals back.

    Autocast keeps a cast copy of a weight only for weights that require grad and outside
    inference mode, so a frozen (LoRA base) or inference-mode model would recast every weight at
    every decode step: more time than the matmuls themselves on a CPU. Casting once costs one
    extra copy of the weights in `dtype` while generating. A tied embedding shares the lm_head
    weight, so it is held in `dtype` too.
    """
    if dtype is None:
        yield
        return
    originals: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (
            isinstance(module, torch.nn.Linear)
            and weight is not None
            and weight.is_floating_point()
        ):
            originals.setdefault(id(weight), (weight, weight.data))
    try:
        with torch.no_grad():
            for weight, data in originals.values():
                weight.data = data.to(dtype)
        yield
    finally:
        for weight, data in originals.values():
            weight.data = data


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    # A policy fresh from training may still be in train mode: no dropout while sampling.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# --- the loop ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    prompt: int
    sample: int


@dataclass
class _RowOutput:
    token_ids: list[int]
    finished: bool


def generate(
    model: PolicyModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    config: GenerationConfig,
    *,
    device: torch.device | str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Sample `config.samples_per_prompt` answers per prompt; see the module docstring.

    `device` is where the inputs go (default: the model's). `on_batch(done_rows, total_rows)`
    reports progress after each batch; `on_step(rows, total_rows)` within a batch too, every
    PROGRESS_EVERY_STEPS decode steps, with the batch's rows counted by the share of its steps
    done (a progress bar that moves while a long batch runs); `should_stop()` is asked before
    each batch and ends the run early (`cancelled`), keeping the samples already made. The
    model is used in eval mode and, under bf16, with its Linear weights held in bf16; both are
    restored on return, so do not train it from another thread meanwhile.
    """
    config.validate()
    started = time.perf_counter()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prompt_ids = encode_prompts(tokenizer, prompts, config.max_prompt_length)
    stop_ids = torch.tensor(stop_token_ids(model, tokenizer), device=device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(stop_ids[0])

    n = config.samples_per_prompt
    # Similar lengths share a batch (little padding); a prompt's samples stay together so its
    # prefill runs once.
    rows = sorted(
        (_Row(p, s) for p in range(len(prompts)) for s in range(n)),
        key=lambda r: (len(prompt_ids[r.prompt]), r.prompt, r.sample),
    )
    batches = [rows[i : i + config.batch_size] for i in range(0, len(rows), config.batch_size)]
    rows_all = rows
    signature = forward_signature(model)
    outputs: dict[_Row, _RowOutput] = {}
    cancelled = False
    with (
        _eval_mode(model),
        _linear_weights_cast_once(model, autocast_dtype(config.precision, device)),
        torch.inference_mode(),
        autocast(config.precision, device),
    ):
        for batch in batches:
            if should_stop is not None and should_stop():
                cancelled = True
                break
            seeds = [row_seed(config.seed, r.prompt, r.sample) for r in batch]

            def step_done(step: int, done: int = len(outputs), rows: int = len(batch)) -> None:
                if on_step is not None:
                    on_step(done + rows * step // config.max_new_tokens, len(rows_all))

            produced = _generate_batch(
                model, signature, [prompt_ids[r.prompt] for r in batch], config,
                uniforms=row_uniforms(seeds, config.max_new_tokens),
                stop_ids=stop_ids, pad_id=pad_id, device=device, on_step=step_done,
            )  # fmt: skip
            outputs.update(zip(batch, produced, strict=True))
            if on_batch is not None:
                on_batch(len(outputs), len(rows))

    samples: list[list[Sample]] = [[] for _ in prompts]
    for row in sorted(outputs, key=lambda r: (r.prompt, r.sample)):
        out = outputs[row]
        text = tokenizer.decode(out.token_ids, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence decodes to one text
        samples[row.prompt].append(Sample(text, out.token_ids, len(out.token_ids), out.finished))
    seconds = time.perf_counter() - started
    new_tokens = sum(len(out.token_ids) for out in outputs.values())
    return GenerationResult(
        samples=samples,
        seconds=seconds,
        new_tokens=new_tokens,
        tokens_per_second=new_tokens / seconds if seconds > 0 else 0.0,
        prompt_tokens=sum(len(ids) for ids in prompt_ids),
        cancelled=cancelled,
    )


def _generate_batch(
    model: PolicyModel,
    signature: ForwardSignature,
    prompt_ids: list[list[int]],
    config: GenerationConfig,
    *,
    uniforms: torch.Tensor,
    stop_ids: torch.Tensor,
    pad_id: int,
    device: torch.device,
    on_step: Callable[[int], None] | None = None,
) -> list[_RowOutput]:
    """Sample one batch of rows (rows of the same prompt adjacent); returns one output per row."""
    steps = config.max_new_tokens
    # Distinct prompts: rows of one prompt are adjacent and hold the same list object.
    distinct: list[list[int]] = []
    expand_list: list[int] = []
    for ids in prompt_ids:
        if not distinct or distinct[-1] is not ids:
            distinct.append(ids)
        expand_list.append(len(distinct) - 1)
    prompt_len = max(len(ids) for ids in distinct)
    unique_rows, rows = len(distinct), len(prompt_ids)

    input_ids = torch.full((unique_rows, prompt_len), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((unique_rows, prompt_len), dtype=torch.long)
    for i, ids in enumerate(distinct):  # left padding: every prompt ends at the last column
        input_ids[i, prompt_len - len(ids) :] = torch.tensor(ids)
        prompt_mask[i, prompt_len - len(ids) :] = 1
    input_ids, prompt_mask = input_ids.to(device), prompt_mask.to(device)
    # Padded positions get a dummy 0; real tokens count from 0 at their own first token.
    positions = (prompt_mask.cumsum(-1) - 1).clamp_(min=0)  # [U, P]
    expand = torch.tensor(expand_list, device=device) if unique_rows < rows else None

    # One mask for prompt + answer, sliced to the current length: no torch.cat per step.
    mask = torch.ones((rows, prompt_len + steps), dtype=torch.long, device=device)  # [B, P + T]
    mask[:, :prompt_len] = prompt_mask if expand is None else prompt_mask[expand]
    cache = new_cache(model, prompt_len + steps, expand)
    keep = {"logits_to_keep": 1} if signature.logits_to_keep else {}
    logits = model(
        input_ids=input_ids, attention_mask=prompt_mask, position_ids=positions,
        use_cache=True, **{signature.cache_name: cache}, **keep,
    ).logits[:, -1]  # fmt: skip  # [U, V]
    if expand is not None:
        logits = logits[expand]  # [B, V]
    next_position = positions[:, -1:] + 1 if expand is None else positions[expand, -1:] + 1

    tokens = torch.full((rows, steps), pad_id, dtype=torch.long, device=device)  # [B, T]
    lengths = torch.zeros(rows, dtype=torch.long, device=device)  # [B] tokens produced
    finished = torch.zeros(rows, dtype=torch.bool, device=device)  # [B]
    live = torch.arange(rows, device=device)  # [b] batch row of each row still in the batch
    uniforms = uniforms.to(device)  # [b, T]
    for step in range(steps):
        new = sample_tokens(
            logits, uniforms[:, step],
            temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
        )  # fmt: skip  # [b]
        done_before = finished[live]  # [b]
        new = new.masked_fill(done_before, pad_id)  # finished rows not yet dropped get pads
        tokens[live, step] = new
        lengths[live] += (~done_before).long()
        done = done_before | torch.isin(new, stop_ids)  # [b]
        finished[live] = done
        if step == steps - 1 or bool(done.all()):
            break
        if on_step is not None and step and step % PROGRESS_EVERY_STEPS == 0:
            on_step(step)
        if int(done.sum()) >= max(1.0, DROP_FINISHED_FRACTION * len(live)):
            # Finished rows leave the batch: every following step is smaller.
            kept = (~done).nonzero().squeeze(-1)  # [b'] positions in the current batch
            cache.batch_select_indices(kept)
            live, new, next_position = live[kept], new[kept], next_position[kept]
            mask, uniforms = mask[kept], uniforms[kept]
        logits = model(
            input_ids=new.unsqueeze(-1), attention_mask=mask[:, : prompt_len + step + 1],
            position_ids=next_position, use_cache=True, **{signature.cache_name: cache},
            **keep,
        ).logits[:, -1]  # fmt: skip  # [b, V]
        next_position = next_position + 1
    return [_RowOutput(tokens[r, : lengths[r]].tolist(), bool(finished[r])) for r in range(rows)]

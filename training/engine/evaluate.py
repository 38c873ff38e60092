"""What the promotion gates measure: a candidate policy against its parent and its reference.

- **Win rate**: candidate and parent answer the same held-out prompts (the parent's answers are
  the ones it served, when given, else sampled with the same seeds); the reward model scores
  both; the share of pairs the candidate wins (a tie counts half).
- **KL**: along the candidate's own answers, the exact KL(pi(.|y_<t) || pi_ref(.|y_<t)) over the
  whole vocabulary at every answer position, summed per answer and averaged: nats per answer.
  Exact per position, so never negative, even though answers are sampled with temperature and
  top-p (which bias the one-sample log-ratio estimator). The reference is the base model with
  the adapter switched off.
- **Held-out accuracy**: on human pairs that no training run saw, how often the candidate's
  implicit reward log pi(y)/pi_ref(y) ranks the human choice above the other answer (DPO's
  reward accuracy). Below one half, the update moved against what people prefer.

Everything runs on one model in memory: the candidate adapter, the parent as a second adapter on
the same base (or no adapter when the parent is the base), and the reference with adapters off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from accelerate import Accelerator
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.engine import metric_names as metric
from training.engine import runtime
from training.engine.config import GenerationConfig, load_config
from training.engine.data import (
    EncodedPair,
    PreferenceRow,
    Prompt,
    encode_pairs,
)
from training.engine.dpo import decided_rows, reference_logps
from training.engine.generate import (
    GenerationResult,
    Sample,
    encode_prompts,
    generate,
    stop_token_ids,
)
from training.engine.models import (
    PolicyLogprobs,
    RewardScorer,
    backbone_hidden_states,
    context_length,
    lm_head,
    load_policy,
    load_reward_model,
    unwrap,
)
from training.engine.reward import score_pairs

PARENT_ADAPTER = "parent"


@dataclass
class AnswerPair:
    """One held-out prompt answered once by each policy with the same seed."""

    prompt: Prompt
    candidate: str
    parent: str
    candidate_tokens: int
    parent_tokens: int


@dataclass
class PolicyEvaluation:
    pairs: list[AnswerPair]
    kl: float  # nats per answer, mean over the candidate's answers
    win_rate: float | None = None  # None without a reward model
    heldout_accuracy: float | None = None  # None without held-out human pairs
    heldout_pairs: int = 0
    candidate_scores: list[float] = field(default_factory=list)
    parent_scores: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float | None]:
        lengths = [p.candidate_tokens for p in self.pairs]
        parent_lengths = [p.parent_tokens for p in self.pairs]
        return {
            metric.WIN_RATE: self.win_rate,
            metric.KL: self.kl,
            metric.HELDOUT_ACCURACY: self.heldout_accuracy,
            metric.HELDOUT_PAIRS: float(self.heldout_pairs),
            metric.PROMPTS: float(len(self.pairs)),
            metric.CANDIDATE_TOKENS: sum(lengths) / len(lengths) if lengths else None,
            metric.PARENT_TOKENS: (
                sum(parent_lengths) / len(parent_lengths) if parent_lengths else None
            ),
        }


def evaluate_policy(
    *,
    base_model: str,
    candidate_adapter: str | Path,
    parent_adapter: str | Path | None,
    prompts: Sequence[Prompt],
    generation: GenerationConfig,
    reward_model: str | Path | None = None,
    heldout_rows: Sequence[PreferenceRow] = (),
    parent_answers: Sequence[Sequence[str]] | None = None,
    batch_size: int = 8,
    cache_dir: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    candidate_writer: CandidateWriter | None = None,
) -> PolicyEvaluation:
    """Sample both policies on `prompts`, then measure win rate, KL and held-out accuracy.

    parent_answers, when given, are answers the parent already wrote to each prompt (a round's
    served answers): they are compared instead of sampling the parent again.
    candidate_writer, when given, writes the candidate's answers elsewhere (an inference
    server): (prompts, config, on_progress) -> per prompt, (text, finished) per sample. The
    KL and held-out figures still need the weights and are computed here, along the answers'
    tokens as this tokenizer encodes them.
    on_progress(done, total) counts sampled answers; should_stop is asked before each
    generation batch and raises RunCancelled.
    """
    runtime.configure_threads()
    accelerator = runtime.make_accelerator(generation.precision, 1)
    model, tokenizer = load_policy(
        base_model, adapter=candidate_adapter, cache_dir=cache_dir, device=accelerator.device
    )
    assert isinstance(model, PeftModel)  # loaded with the candidate's adapter
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    answers = len(prompts) * generation.samples_per_prompt
    total = answers if parent_answers is not None else 2 * answers

    def sample(offset: int) -> GenerationResult:
        def progress(done: int, _total: int) -> None:
            if on_progress is not None:
                on_progress(offset + done, total)

        result = generate(
            model, tokenizer, prompts, generation, on_batch=progress, should_stop=should_stop,
            on_step=progress,
        )  # fmt: skip
        if result.cancelled:
            raise runtime.RunCancelled("stopped while sampling")
        return result

    if on_progress is not None:
        on_progress(0, total)  # the total is known before the first batch ends
    candidate = (
        sample(0)
        if candidate_writer is None
        else _written_result(candidate_writer, prompts, generation, tokenizer, model, on_progress)
    )
    if parent_answers is None:
        with parent_policy(model, parent_adapter):
            parent = sample(answers)
        parent_answers = [[s.text for s in samples] for samples in parent.samples]
    seconds["generation"] = time.perf_counter() - started

    prompt_ids = encode_prompts(tokenizer, prompts, generation.max_prompt_length)
    pairs: list[AnswerPair] = []
    sampled: list[list[int]] = []
    sampled_lengths: list[int] = []
    for index, prompt in enumerate(prompts):
        theirs = parent_answers[index]
        for number, mine in enumerate(candidate.samples[index]):
            other = theirs[number % len(theirs)]
            other_tokens = len(tokenizer(other, add_special_tokens=False)["input_ids"])
            pairs.append(AnswerPair(prompt, mine.text, other, mine.token_count, other_tokens))
            sampled.append(prompt_ids[index] + mine.token_ids)  # exactly what it sampled
            sampled_lengths.append(len(prompt_ids[index]))

    started = time.perf_counter()
    scorer = PolicyLogprobs(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kl_per_answer = answer_kl(model, sampled, sampled_lengths, batch_size, pad_id, accelerator)
    result = PolicyEvaluation(pairs=pairs, kl=kl_per_answer.mean().item())
    decided = decided_rows(list(heldout_rows))
    if decided:
        trained_with = load_config(Path(candidate_adapter))
        encoded = encode_pairs(
            decided,
            tokenizer,
            max_length=trained_with.max_length,
            max_prompt_length=trained_with.max_prompt_length,
            context_length=context_length(model),
        )
        ratios = sequence_log_ratios(scorer, encoded, batch_size, pad_id, accelerator)
        result.heldout_accuracy = (ratios[:, 0] > ratios[:, 1]).float().mean().item()
        result.heldout_pairs = len(decided)
    seconds["policy_scoring"] = time.perf_counter() - started

    if reward_model is not None:
        started = time.perf_counter()
        rows = [PreferenceRow(p.prompt, p.candidate, p.parent) for p in pairs]
        scores = reward_pair_scores(reward_model, rows, batch_size=batch_size, cache_dir=cache_dir)
        result.candidate_scores = scores[:, 0].tolist()
        result.parent_scores = scores[:, 1].tolist()
        result.win_rate = win_rate(scores[:, 0], scores[:, 1])
        seconds["reward_scoring"] = time.perf_counter() - started
    result.seconds = seconds
    return result


CandidateWriter = Callable[
    [Sequence[Prompt], GenerationConfig, Callable[[int, int], None]], list[list[tuple[str, bool]]]
]


def _written_result(
    writer: CandidateWriter,
    prompts: Sequence[Prompt],
    generation: GenerationConfig,
    tokenizer: PreTrainedTokenizerBase,
    model: PeftModel,
    on_progress: Callable[[int, int], None] | None,
) -> GenerationResult:
    """Answers written elsewhere, as samples: their token ids re-encoded here, the end-of-turn
    token appended to each answer that ended, as the sampler records it."""
    stop = stop_token_ids(model, tokenizer)[0]
    started = time.perf_counter()
    written = writer(prompts, generation, on_progress or (lambda done, total: None))
    samples = []
    for answers in written:
        row = []
        for text, finished in answers:
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) + (
                [stop] if finished else []
            )
            row.append(Sample(text, ids, len(ids), finished))
        samples.append(row)
    seconds = time.perf_counter() - started
    new_tokens = sum(s.token_count for row in samples for s in row)
    return GenerationResult(
        samples=samples, seconds=seconds, new_tokens=new_tokens,
        tokens_per_second=new_tokens / seconds if seconds > 0 else 0.0, prompt_tokens=0,
    )  # fmt: skip


class parent_policy:
    """Context manager: the model answers as the parent, then as the candidate again.

    The parent is a second adapter on the same base weights (one copy in memory), or no adapter
    at all when the parent is the base model.
    """

    def __init__(self, model: PeftModel, parent_adapter: str | Path | None) -> None:
        self.model = model
        self.parent_adapter = parent_adapter
        self._disabled: AbstractContextManager[Any] | None = None

    def __enter__(self) -> PeftModel:
        if self.parent_adapter is None:
            self._disabled = self.model.disable_adapter()
            self._disabled.__enter__()
        else:
            if PARENT_ADAPTER not in self.model.peft_config:
                self.model.load_adapter(str(self.parent_adapter), adapter_name=PARENT_ADAPTER)
            self.model.set_adapter(PARENT_ADAPTER)
        return self.model

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._disabled is not None:
            self._disabled.__exit__(exc_type, exc, traceback)
        else:
            self.model.set_adapter("default")


@torch.inference_mode()
def answer_kl(
    model: PeftModel,
    sequences: list[list[int]],  # prompt + answer ids
    prompt_lengths: list[int],
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> torch.Tensor:  # (N,) nats per answer
    """Sum over answer positions of KL(pi || pi_ref) between the next-token distributions."""
    out = torch.zeros(len(sequences))
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    inner = unwrap(model)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in index)
        input_ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(index), width), dtype=torch.long)
        predicts = torch.zeros((len(index), width), dtype=torch.bool)  # position predicts answer
        for row, i in enumerate(index):
            ids = sequences[i]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            predicts[row, prompt_lengths[i] - 1 : len(ids) - 1] = True
        input_ids, attention = input_ids.to(accelerator.device), attention.to(accelerator.device)
        predicts = predicts.to(accelerator.device)

        batch = (inner, input_ids, attention, predicts, accelerator)
        policy = _next_token_logps(*batch)
        with model.disable_adapter():
            reference = _next_token_logps(*batch)
        per_token = (policy.exp() * (policy - reference)).sum(dim=-1)  # (M,)
        rows = torch.arange(len(index), device=predicts.device)[:, None].expand_as(predicts)
        sums = torch.zeros(len(index), device=predicts.device).index_add(
            0, rows[predicts], per_token
        )
        out[index] = sums.cpu()
    model.train(was_training)
    return out


def _next_token_logps(
    inner: PreTrainedModel,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    predicts: torch.Tensor,
    accelerator: Accelerator,
) -> torch.Tensor:  # (M, V) log-distributions at the M answer-predicting positions
    with accelerator.autocast():
        hidden = backbone_hidden_states(inner, input_ids, attention)[predicts]  # (M, H)
        logits = lm_head(inner)(hidden)
    return torch.log_softmax(logits.float(), dim=-1)


def sequence_log_ratios(
    scorer: PolicyLogprobs,
    pairs: list[EncodedPair],
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> torch.Tensor:  # (N, 2): log pi - log pi_ref of each pair's first and second answer
    """Summed log-probability ratios of the adapted model over its adapter-free reference."""

    def summed_logps(adapter_off: bool) -> torch.Tensor:  # (N, 2)
        return reference_logps(
            scorer, pairs, adapter_off=adapter_off, per_token=False, batch_size=batch_size,
            pad_id=pad_id, accelerator=accelerator,
        )  # fmt: skip

    return summed_logps(adapter_off=False) - summed_logps(adapter_off=True)


def win_rate(candidate: torch.Tensor, parent: torch.Tensor) -> float:
    """Share of pairs the candidate scores higher; equal scores (same answer) count half."""
    wins = (candidate > parent).float() + 0.5 * (candidate == parent).float()
    return wins.mean().item()


class RewardJudge:
    """A trained reward model loaded once, scoring pairs of answers on demand."""

    def __init__(
        self, artifact: str | Path, *, precision: str = "auto", cache_dir: Path | None = None
    ) -> None:
        self.trained_with = load_config(Path(artifact))
        self.accelerator = runtime.make_accelerator(precision, 1)
        model, self.tokenizer = load_reward_model(
            artifact, cache_dir=cache_dir, device=self.accelerator.device
        )
        self.scorer = RewardScorer(model)
        self.context_length = context_length(model)

    def pair_scores(
        self, rows: Sequence[PreferenceRow], batch_size: int = 16
    ) -> torch.Tensor:  # (N, 2): the reward of each row's "chosen" and "rejected" answer
        pairs = encode_pairs(
            list(rows),
            self.tokenizer,
            max_length=self.trained_with.max_length,
            max_prompt_length=self.trained_with.max_prompt_length,
            context_length=self.context_length,
        )
        return score_pairs(
            self.scorer, pairs, batch_size, self.tokenizer.pad_token_id, self.accelerator
        )


def reward_pair_scores(
    artifact: str | Path,
    rows: Sequence[PreferenceRow],
    *,
    batch_size: int = 16,
    precision: str = "auto",
    cache_dir: Path | None = None,
) -> torch.Tensor:  # (N, 2), in the row order given
    """Score both answers of every row with a trained reward model."""
    judge = RewardJudge(artifact, precision=precision, cache_dir=cache_dir)
    return judge.pair_scores(rows, batch_size)

"""What the promotion gates measure: a candidate policy against its parent and its reference.

- **Win rate**: candidate and parent answer the same held-out prompts with the same seeds; the
  reward model scores both answers; the share of pairs the candidate wins (a tie counts half).
- **KL**: the mean over the candidate's own answers of sum_t log pi(y_t) - log pi_ref(y_t), the
  k1 estimator of KL(pi || pi_ref) in nats per answer, computed on the exact sampled token ids.
  The reference is the base model with the adapter switched off.
- **Held-out accuracy**: on human pairs that no training run saw, how often the candidate's
  implicit reward log pi(y)/pi_ref(y) ranks the human choice above the other answer (DPO's
  reward accuracy). Below one half, the update moved against what people prefer.

Everything runs on one model in memory: the candidate adapter, the parent as a second adapter on
the same base (or no adapter when the parent is the base), and the reference with adapters off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel

from training.engine import runtime
from training.engine.config import GenerationConfig, load_config
from training.engine.data import (
    EncodedPair,
    PreferenceRow,
    Prompt,
    collate_reward_pairs,
    encode_pairs,
)
from training.engine.dpo import decided_rows, reference_logps
from training.engine.generate import encode_prompts, generate
from training.engine.models import (
    PolicyLogprobs,
    RewardScorer,
    context_length,
    load_policy,
    load_reward_model,
)
from training.engine.reward import pair_scores

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
            "win_rate": self.win_rate,
            "kl": self.kl,
            "heldout_accuracy": self.heldout_accuracy,
            "heldout_pairs": float(self.heldout_pairs),
            "prompts": float(len(self.pairs)),
            "candidate_tokens": sum(lengths) / len(lengths) if lengths else None,
            "parent_tokens": sum(parent_lengths) / len(parent_lengths) if parent_lengths else None,
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
    batch_size: int = 8,
    cache_dir: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PolicyEvaluation:
    """Sample both policies on `prompts`, then measure win rate, KL and held-out accuracy.

    on_progress(done, total) counts sampled answers of both policies; should_stop is asked
    before each generation batch and raises RunCancelled.
    """
    runtime.configure_threads()
    accelerator = runtime.make_accelerator(generation.precision, 1)
    model, tokenizer = load_policy(
        base_model, adapter=candidate_adapter, cache_dir=cache_dir, device=accelerator.device
    )
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    answers = len(prompts) * generation.samples_per_prompt

    def sample(offset: int):
        def progress(done: int, _total: int) -> None:
            if on_progress is not None:
                on_progress(offset + done, 2 * answers)

        result = generate(
            model, tokenizer, prompts, generation, on_batch=progress, should_stop=should_stop
        )
        if result.cancelled:
            raise runtime.RunCancelled("stopped while sampling")
        return result

    candidate = sample(0)
    with parent_policy(model, parent_adapter):
        parent = sample(answers)
    seconds["generation"] = time.perf_counter() - started

    prompt_ids = encode_prompts(tokenizer, prompts, generation.max_prompt_length)
    pairs, sampled = [], []
    for index, prompt in enumerate(prompts):
        for mine, theirs in zip(candidate.samples[index], parent.samples[index], strict=True):
            pairs.append(
                AnswerPair(prompt, mine.text, theirs.text, mine.token_count, theirs.token_count)
            )
            # Exactly the tokens the candidate sampled: k1 is unbiased only on its own samples.
            sampled.append(
                EncodedPair(prompt_ids[index], mine.token_ids, theirs.token_ids, 1.0, 0.0, 1.0, 0)
            )

    started = time.perf_counter()
    scorer = PolicyLogprobs(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kl = sequence_log_ratios(scorer, sampled, batch_size, pad_id, accelerator)[:, 0].mean().item()
    result = PolicyEvaluation(pairs=pairs, kl=kl)
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


class parent_policy:
    """Context manager: the model answers as the parent, then as the candidate again.

    The parent is a second adapter on the same base weights (one copy in memory), or no adapter
    at all when the parent is the base model.
    """

    def __init__(self, model: PeftModel, parent_adapter: str | Path | None) -> None:
        self.model = model
        self.parent_adapter = parent_adapter
        self._disabled = None

    def __enter__(self) -> PeftModel:
        if self.parent_adapter is None:
            self._disabled = self.model.disable_adapter()
            self._disabled.__enter__()
        else:
            if PARENT_ADAPTER not in self.model.peft_config:
                self.model.load_adapter(str(self.parent_adapter), adapter_name=PARENT_ADAPTER)
            self.model.set_adapter(PARENT_ADAPTER)
        return self.model

    def __exit__(self, *exc_info) -> None:
        if self._disabled is not None:
            self._disabled.__exit__(*exc_info)
        else:
            self.model.set_adapter("default")


def sequence_log_ratios(
    scorer: PolicyLogprobs,
    pairs: list[EncodedPair],
    batch_size: int,
    pad_id: int,
    accelerator,
) -> torch.Tensor:  # (N, 2): log pi - log pi_ref of each pair's first and second answer
    """Summed log-probability ratios of the adapted model over its adapter-free reference."""
    common = {"per_token": False, "batch_size": batch_size, "pad_id": pad_id}
    policy = reference_logps(scorer, pairs, adapter_off=False, accelerator=accelerator, **common)
    reference = reference_logps(scorer, pairs, adapter_off=True, accelerator=accelerator, **common)
    return policy - reference


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

    @torch.inference_mode()
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
        out = torch.zeros(len(pairs), 2)
        order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = collate_reward_pairs([pairs[i] for i in index], self.tokenizer.pad_token_id)
            with self.accelerator.autocast():
                chosen, rejected = pair_scores(self.scorer, batch, self.accelerator.device)
            out[index, 0], out[index, 1] = chosen.float().cpu(), rejected.float().cpu()
        return out


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

"""Online RL with LoRA: PPO with a value head, and RLOO, on answers the policy writes itself.

train_ppo and train_rloo each read top to bottom. Load the policy (a fresh LoRA adapter, or a
previous round's), a value head on its hidden states (PPO only) and the reward: a reward-model
artifact, which scores the decoded text with its own tokenizer, or a Python function. Then each
iteration:

  1. rollout: sample answers with the engine's sampler; one forward for the policy's per-token
     log-probs and values, one with the adapter switched off for the reference's log-probs;
  2. reward: score each answer (an answer that never ends pays missing_eos_penalty); per-token
     reward -beta * KL(policy || reference), the score added at the answer's last token;
  3. advantages: GAE on the value head (PPO), or each answer against the mean of the other k - 1
     answers to its prompt (RLOO); whitened;
  4. update: update_epochs passes over the answers in minibatches: clipped policy loss, clipped
     value loss (PPO), gradient clipping;
  5. metrics (masked: padding and prompt tokens never count), the adaptive KL controller,
     checkpoint.

What the two loops do alike (the prompt split, the optimizer and resume, the rollout, the policy
loss of a micro-batch, metrics, the artifact) are the small functions above them.

The reference is the same weights with the adapter switched off: one copy of the model. Dropout
stays off throughout (eval mode), so on the first pass over a rollout the ratio is exactly 1.
Runs on CPU, one GPU or many through `accelerate launch` (each process samples its own slice of
the iteration's prompts).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from training.engine import ensemble, runtime
from training.engine import metric_names as metric
from training.engine.config import (
    GenerationConfig,
    OnlineRLSettings,
    PPOConfig,
    RLOOConfig,
    load_config,
)
from training.engine.data import PreferenceRow, encode_pairs, render_prompt
from training.engine.generate import Prompt, encode_prompts, generate
from training.engine.losses import (
    adaptive_kl_coef,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    frozen_projection_weight,
    gae_advantages,
    kl_per_token,
    masked_mean,
    masked_whiten,
    projected_token_logprobs,
    rloo_advantages,
    token_rewards,
)
from training.engine.models import (
    ARTIFACT_FILE,
    POLICY_ADAPTER,
    PolicyModel,
    backbone_hidden_states,
    context_length,
    freeze_in_low_precision,
    lm_head,
    load_policy,
    load_reward_model,
    reward_head_inputs,
    reward_scores,
    save_artifact,
    unwrap,
)
from training.engine.precision import autocast, autocast_dtype
from training.engine.runtime import Callbacks, Metrics, RunCancelled, TrainResult

VALUE_HEAD_FILE = "value_head.safetensors"
Algorithm = Literal["ppo", "rloo"]
# The reward as a function: (prompt texts, answers) -> one score per answer. Chat prompts arrive
# rendered with the policy's chat template; plain prompts as they were given.
RewardFunction = Callable[[list[str], list[str]], list[float]]
# Either kind of reward, ready to call: (prompts, answers) -> one score per answer.
Scorer = Callable[[Sequence[Prompt], Sequence[str]], list[float]]


# --- models --------------------------------------------------------------------------------------


def new_value_head(hidden_size: int) -> torch.nn.Linear:
    # Zero weights: values start at 0 and, at first, send no gradient into the shared adapter.
    head = torch.nn.Linear(hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


def save_value_head(head: torch.nn.Linear, folder: Path) -> Path:
    path = Path(folder) / VALUE_HEAD_FILE
    state = {
        name: value.detach().float().cpu().contiguous() for name, value in head.state_dict().items()
    }
    save_file(state, path)
    return path


def load_value_head(folder: Path, hidden_size: int) -> torch.nn.Linear | None:
    """The value head saved beside an adapter by an earlier PPO run, or None (a DPO adapter)."""
    path = Path(folder) / VALUE_HEAD_FILE
    if not path.exists():
        return None
    head = new_value_head(hidden_size)
    head.load_state_dict(load_file(path))
    return head


class PolicyAndValue(torch.nn.Module):
    """forward(input_ids, attention_mask, positions, answer_ids, mask) ->
    per-token log-probs (N, R), entropy (N, R), values (N, R) or None.

    input_ids, attention_mask (N, T): prompt + answer, right-padded. positions (N, R): index in
    input_ids of the hidden state that predicts answer token r. answer_ids, mask (N, R).
    Only answer positions go through the vocabulary projection; log-probs are of the sampling
    distribution, softmax(logits / temperature). Loops call this module (not the model) so that
    DistributedDataParallel sees the forward.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        value_head: torch.nn.Linear | None,
        *,
        temperature: float,
        entropy_grad: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.value_head = value_head
        self.temperature = temperature
        self.entropy_grad = entropy_grad  # only an entropy bonus needs its gradient

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        positions: Tensor,
        answer_ids: Tensor,
        mask: Tensor,
        with_values: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        inner = unwrap(self.model)
        hidden = backbone_hidden_states(inner, input_ids, attention_mask)  # (N, T, H)
        index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (N, R, H)
        hidden = hidden.gather(1, index)  # (N, R, H)
        head = lm_head(inner)
        weight = frozen_projection_weight(head)
        zeros = torch.zeros(mask.shape, device=hidden.device)  # (N, R)
        if weight is not None and not self.entropy_grad:
            # A chunk of (M, V) at a time; the entropy is only reported.
            token_logps, token_entropy = projected_token_logprobs(
                hidden[mask],
                weight,
                answer_ids[mask],
                temperature=self.temperature,
                with_entropy=True,
            )  # (M,), (M,)
        else:
            logits = head(hidden[mask]).float() / self.temperature  # (M, V)
            token_logps = -F.cross_entropy(logits, answer_ids[mask], reduction="none")  # (M,)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.entropy_grad):
                log_p = logits.log_softmax(-1)  # (M, V)
                token_entropy = -(log_p.exp() * log_p).sum(-1)  # (M,)
        logprobs = zeros.masked_scatter(mask, token_logps)
        entropy = zeros.masked_scatter(mask, token_entropy)
        values = None
        if with_values and self.value_head is not None:
            values = self.value_head(hidden).squeeze(-1).float()  # (N, R)
            values = torch.where(mask, values, 0.0)
        return logprobs, entropy, values


class RewardModelScore:
    """A reward-model artifact as a scorer: re-encodes each (prompt, answer) with the reward
    model's own tokenizer and lengths, exactly as its training encoded pairs."""

    def __init__(
        self,
        artifact: str | Path,
        *,
        device: torch.device,
        precision: str,
        batch_size: int,
        cache_dir: Path | None,
    ) -> None:
        self.model, self.tokenizer = load_reward_model(artifact, cache_dir=cache_dir, device=device)
        self.model.requires_grad_(False)
        freeze_in_low_precision(self.model, autocast_dtype(precision, device))
        trained_with = load_config(Path(artifact))
        self.max_length, self.max_prompt_length = (
            trained_with.max_length,
            trained_with.max_prompt_length,
        )
        self.device, self.precision, self.batch_size = device, precision, batch_size
        self.artifact = Path(artifact)

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> list[float]:
        return [float(score) for score, _ in self._scored(prompts, answers, with_features=False)]

    @torch.inference_mode()
    def with_heads(
        self, prompts: Sequence[Prompt], answers: Sequence[str]
    ) -> tuple[list[float], list[list[float]]]:
        """Each answer's reward and each bootstrap head's (engine.ensemble); no heads (empty
        lists) where the reward model was trained without them."""
        heads = ensemble.load_heads(self.artifact)
        scores: list[float] = []
        per_head: list[list[float]] = []
        for score, features in self._scored(prompts, answers, with_features=heads is not None):
            scores.append(float(score))
            if features is None or heads is None:
                per_head.append([])
            else:
                per_head.append(ensemble.head_scores(features[None], heads)[0].tolist())
        return scores, per_head

    @torch.inference_mode()
    def with_posterior(
        self, prompts: Sequence[Prompt], answers: Sequence[str]
    ) -> tuple[list[float], ensemble.AnswerPosterior | None]:
        """Each answer's reward and, where the reward model was trained with the head's Laplace
        posterior (engine.ensemble.HeadPosterior), every answer under it; else None."""
        posterior = ensemble.load_posterior(self.artifact)
        scored = list(self._scored(prompts, answers, with_features=posterior is not None))
        scores = [float(score) for score, _ in scored]
        if posterior is None or not scored:
            return scores, None
        features = torch.stack([f for _, f in scored if f is not None])  # (N, H)
        return scores, posterior.answers(features)

    def _scored(
        self, prompts: Sequence[Prompt], answers: Sequence[str], *, with_features: bool
    ) -> Iterator[tuple[float, torch.Tensor | None]]:
        """(reward, head features or None) of each answer, in order, batched."""
        rows = [
            PreferenceRow(prompt=p, chosen=a, rejected=a)
            for p, a in zip(prompts, answers, strict=True)
        ]
        pairs = encode_pairs(
            rows,
            self.tokenizer,
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
            context_length=context_length(self.model),
        )
        for start in range(0, len(pairs), self.batch_size):
            sequences = [
                p.prompt_ids + p.chosen_ids for p in pairs[start : start + self.batch_size]
            ]
            ids, attention = right_pad(sequences, self.tokenizer.pad_token_id)
            with reward_head_inputs(self.model) as captured, autocast(self.precision, self.device):
                batch = reward_scores(self.model, ids.to(self.device), attention.to(self.device))
            features = captured[-1].cpu() if with_features else None
            for index, score in enumerate(batch.float().cpu().tolist()):
                yield score, None if features is None else features[index]


def reward_scorer(
    reward: str | Path | RewardFunction,
    policy_tokenizer: PreTrainedTokenizerBase,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    cache_dir: Path | None,
) -> Scorer:
    """One scorer for either kind of reward: (prompts, answers) -> scores."""
    if not callable(reward):
        return RewardModelScore(
            reward, device=device, precision=precision, batch_size=batch_size, cache_dir=cache_dir
        )

    def score(prompts: Sequence[Prompt], answers: Sequence[str]) -> list[float]:
        texts = [p if isinstance(p, str) else render_prompt(p, policy_tokenizer) for p in prompts]
        return list(reward(texts, list(answers)))

    return score


# --- rollouts ------------------------------------------------------------------------------------


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token id lists -> input_ids, attention_mask (N, T), right-padded."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        ids[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention[i, : len(sequence)] = 1
    return ids, attention


@dataclass
class Rollout:
    """N sampled answers and everything the update needs, on the device.

    Per-token tensors are (N, R), right-padded, `mask` True on answer tokens (the closing stop
    token included). Rows of one prompt are adjacent: row = prompt * k + sample.
    """

    input_ids: Tensor  # (N, T) prompt + answer
    attention_mask: Tensor  # (N, T)
    positions: Tensor  # (N, R) index in input_ids of the hidden state predicting answer token r
    answer_ids: Tensor  # (N, R)
    mask: Tensor  # (N, R) bool
    finished: Tensor  # (N,) bool: ended with a stop token
    raw_scores: Tensor  # (N,) what the reward said
    scores: Tensor  # (N,) after the missing-eos penalty and clipping
    logprobs: Tensor  # (N, R) policy at sampling time
    ref_logprobs: Tensor  # (N, R) adapter off
    entropy: Tensor  # (N, R)
    values: Tensor | None  # (N, R), PPO only
    new_tokens: int
    seconds: float

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def model_inputs(self) -> dict[str, Tensor]:
        """PolicyAndValue's inputs for every row."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "positions": self.positions,
            "answer_ids": self.answer_ids,
            "mask": self.mask,
        }


def pack_answers(
    prompt_ids: Sequence[list[int]], answer_ids: Sequence[list[int]], pad_id: int
) -> dict[str, Tensor]:
    """Prompt + answer rows for the training forward: input_ids, attention_mask (N, T);
    positions, answer_ids, mask (N, R). hidden[p - 1 + r] predicts answer token r of a row whose
    prompt has p tokens."""
    input_ids, attention_mask = right_pad(
        [p + a for p, a in zip(prompt_ids, answer_ids, strict=True)], pad_id
    )
    width = max(len(a) for a in answer_ids)
    answers = torch.full((len(answer_ids), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(answer_ids), width), dtype=torch.long)  # padding: any valid index
    mask = torch.zeros((len(answer_ids), width), dtype=torch.bool)
    for i, (prompt, answer) in enumerate(zip(prompt_ids, answer_ids, strict=True)):
        answers[i, : len(answer)] = torch.tensor(answer, dtype=torch.long)
        positions[i, : len(answer)] = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(answer))
        mask[i, : len(answer)] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "positions": positions,
        "answer_ids": answers,
        "mask": mask,
    }


def trimmed(tensors: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """The given rows, cut to their own longest sequence and answer: no compute on extra pads."""
    width = int(tensors["attention_mask"][rows].sum(dim=1).max())
    answer_width = int(tensors["mask"][rows].sum(dim=1).max())
    return {
        "input_ids": tensors["input_ids"][rows, :width],
        "attention_mask": tensors["attention_mask"][rows, :width],
        "positions": tensors["positions"][rows, :answer_width],
        "answer_ids": tensors["answer_ids"][rows, :answer_width],
        "mask": tensors["mask"][rows, :answer_width],
    }


@torch.inference_mode()
def forward_in_chunks(
    scorer: torch.nn.Module,
    tensors: dict[str, Tensor],
    chunk: int,
    accelerator: Accelerator,
    *,
    with_values: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-token log-probs, entropy and values (N, R) of a whole rollout, chunk rows at a time."""
    n, width = tensors["mask"].shape
    logprobs = torch.zeros(n, width, device=accelerator.device)
    entropy = torch.zeros(n, width, device=accelerator.device)
    values = torch.zeros(n, width, device=accelerator.device) if with_values else None
    # Rows of similar length go through together, so the chunks carry little padding.
    by_length = tensors["attention_mask"].sum(dim=1).argsort(stable=True).cpu()
    for start in range(0, n, chunk):
        rows = by_length[start : start + chunk]
        part = trimmed(tensors, rows)
        with accelerator.autocast():
            lp, ent, val = scorer(**part, with_values=with_values)
        r = part["mask"].shape[1]
        logprobs[rows, :r], entropy[rows, :r] = lp, ent
        if values is not None and val is not None:
            values[rows, :r] = val
    return logprobs, entropy, values


def sample_rollout(
    scorer: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    score: Scorer,
    config: OnlineRLSettings,
    *,
    samples_per_prompt: int,
    seed: int,
    accelerator: Accelerator,
    should_stop: Callable[[], bool] | None,
) -> Rollout | None:
    """Sample, score and record log-probs for `prompts`; None when cancelled while sampling."""
    started = time.perf_counter()
    model = accelerator.unwrap_model(scorer).model
    generation = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=1.0,
        top_k=0,
        samples_per_prompt=samples_per_prompt,
        batch_size=config.generation_batch_size,
        max_prompt_length=config.max_prompt_length,
        seed=seed,
        precision=config.precision,
    )
    result = generate(
        model, tokenizer, prompts, generation, device=accelerator.device, should_stop=should_stop
    )
    if result.cancelled:
        return None
    samples = [sample for per_prompt in result.samples for sample in per_prompt]  # prompt-major
    prompt_ids = encode_prompts(tokenizer, prompts, config.max_prompt_length)  # as the sampler
    row_prompts = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    tensors = pack_answers(
        [prompt_ids[i] for i in row_prompts], [s.token_ids for s in samples], tokenizer.pad_token_id
    )
    tensors = {name: value.to(accelerator.device) for name, value in tensors.items()}

    # Log-probs of the policy (and its values), then of the reference: the same weights with
    # the adapter switched off.
    chunk = config.batch_size
    with_values = accelerator.unwrap_model(scorer).value_head is not None
    logprobs, entropy, values = forward_in_chunks(
        scorer, tensors, chunk, accelerator, with_values=with_values
    )
    with model.disable_adapter():
        ref_logprobs, _, _ = forward_in_chunks(
            scorer, tensors, chunk, accelerator, with_values=False
        )

    raw = score([prompts[i] for i in row_prompts], [s.text for s in samples])
    if len(raw) != len(samples) or not all(math.isfinite(x) for x in raw):
        raise ValueError(
            f"the reward returned {len(raw)} scores for {len(samples)} answers, or a score "
            "that is not a finite number"
        )
    raw_scores = torch.tensor(raw, dtype=torch.float32, device=accelerator.device)
    finished = torch.tensor([s.finished for s in samples], device=accelerator.device)
    scores = raw_scores - config.missing_eos_penalty * (~finished).float()
    if config.reward_clip is not None:
        scores = scores.clamp(-config.reward_clip, config.reward_clip)
    return Rollout(
        **tensors,
        finished=finished,
        raw_scores=raw_scores,
        scores=scores,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        entropy=entropy,
        values=values,
        new_tokens=result.new_tokens,
        seconds=time.perf_counter() - started,
    )


def rollout_metrics(rollout: Rollout, kl: Tensor, kl_coef: float) -> Metrics:
    """What the rollout says about the policy; every token mean is masked, every answer counts
    once. kl (N, R) per-token estimate."""
    mask = rollout.mask
    kl_per_answer = torch.where(mask, kl, 0.0).sum(dim=1)  # (N,)
    return {
        metric.SCORE: rollout.raw_scores.mean().item(),
        metric.REWARD: rollout.scores.mean().item(),
        metric.KL: kl_per_answer.mean().item(),
        metric.KL_COEF: kl_coef,
        metric.TOTAL_REWARD: (rollout.scores - kl_coef * kl_per_answer).mean().item(),
        metric.ENTROPY: masked_mean(rollout.entropy, mask).item(),
        metric.ANSWER_LENGTH: mask.sum(dim=1).float().mean().item(),
        metric.FINISHED: rollout.finished.float().mean().item(),
    }


# --- advantages ----------------------------------------------------------------------------------


def ppo_advantages(
    rollout: Rollout, kl: Tensor, kl_coef: float, config: PPOConfig
) -> tuple[Tensor, Tensor, Metrics]:
    """GAE over per-token rewards -beta * KL + score at the end -> advantages, returns (N, R)."""
    rewards, _ = token_rewards(rollout.scores, kl, rollout.mask, kl_coef=kl_coef)
    if config.whiten_rewards:
        rewards = masked_whiten(rewards, rollout.mask, shift_mean=False)
    assert rollout.values is not None
    advantages, returns = gae_advantages(
        rewards, rollout.values, rollout.mask, gamma=config.gamma, lam=config.lam
    )
    stats = {
        metric.EXPLAINED_VARIANCE: explained_variance(rollout.values, returns, rollout.mask),
        metric.VALUE: masked_mean(rollout.values, rollout.mask).item(),
    }
    if config.whiten_advantages:
        advantages = masked_whiten(advantages, rollout.mask)
    return advantages, returns, stats


def rloo_token_advantages(
    rollout: Rollout, kl: Tensor, kl_coef: float, config: RLOOConfig
) -> Tensor:
    """Sequence reward score - beta * sum KL, less the mean of the prompt's other answers,
    given to every token of the answer (N, R)."""
    kl_sum = torch.where(rollout.mask, kl, 0.0).sum(dim=1)  # (N,)
    rewards = rollout.scores - kl_coef * kl_sum  # (N,)
    if config.whiten_rewards:
        rewards = (rewards - rewards.mean()) / (rewards.std() + 1e-8) + rewards.mean()
    k = config.samples_per_prompt
    advantages = rloo_advantages(rewards.view(-1, k)).reshape(-1)  # (N,)
    if config.whiten_advantages and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return torch.where(rollout.mask, advantages[:, None], 0.0)


# --- what both loops share -----------------------------------------------------------------------


def load_online_policy(
    config: OnlineRLSettings, device: torch.device, cache_dir: Path | None
) -> tuple[PolicyModel, PreTrainedTokenizerBase]:
    """The policy to train: the previous round's adapter to go on with, or a fresh one."""
    model, tokenizer = load_policy(
        config.base_model,
        adapter=config.init_adapter,
        lora=None if config.init_adapter else config.lora,
        trainable=True,
        cache_dir=cache_dir,
        device=device,
    )
    freeze_in_low_precision(model, autocast_dtype(config.precision, device))
    return model, tokenizer


def online_reward(
    reward: str | Path | RewardFunction,
    tokenizer: PreTrainedTokenizerBase,
    config: OnlineRLSettings,
    device: torch.device,
    cache_dir: Path | None,
) -> Scorer:
    return reward_scorer(
        reward,
        tokenizer,
        device=device,
        precision=config.precision,
        batch_size=config.reward_batch_size,
        cache_dir=cache_dir,
    )


@dataclass(frozen=True)
class IterationPlan:
    """Which prompts train and which are held out, and how long the run is."""

    train_prompts: list[Prompt]
    eval_prompts: list[Prompt]
    iterations: int  # rollout + update rounds: the loop's steps
    steps_per_iteration: int  # optimizer steps in one update, on this process

    @property
    def total_steps(self) -> int:
        return self.iterations * self.steps_per_iteration

    def evaluates_at(self, step: int, eval_every: int) -> bool:
        return bool(self.eval_prompts) and (step % eval_every == 0 or step == self.iterations)


def plan_iterations(
    prompts: Sequence[Prompt], config: OnlineRLSettings, accelerator: Accelerator
) -> IterationPlan:
    """A seeded held-out slice of the prompts; iterations from max_steps or epochs over the
    rest; optimizer steps per iteration from this process's share of the answers."""
    train_index, eval_index = runtime.split_train_eval(
        len(prompts), config.eval_fraction, config.seed
    )
    train_prompts = [prompts[i] for i in train_index]
    iterations = config.max_steps or max(
        1, math.ceil(len(train_prompts) * config.epochs / config.prompts_per_iteration)
    )
    my_prompts = range(
        accelerator.process_index, config.prompts_per_iteration, accelerator.num_processes
    )
    rows = len(my_prompts) * config.samples_per_prompt
    steps = config.update_epochs * math.ceil(
        math.ceil(rows / config.batch_size) / config.grad_accum_steps
    )
    return IterationPlan(train_prompts, [prompts[i] for i in eval_index], iterations, steps)


@dataclass
class Optimization:
    """The prepared scorer, its optimizer and schedule, and where a resumed run goes on."""

    scorer: torch.nn.Module  # PolicyAndValue, wrapped by accelerate (DDP under a launcher)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    trainable: list[torch.nn.Parameter]
    output_dir: Path
    start_iteration: int
    kl_coef: float  # beta at start_iteration: the controller's state survives a resume

    def checkpoint(self, iteration: int, kl_coef: float) -> None:
        runtime.save_checkpoint(
            self.output_dir,
            model=self.scorer,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            step=iteration,
            extra={"kl_coef": kl_coef},
        )

    def stop(self, iteration: int, iterations: int, kl_coef: float) -> NoReturn:
        """Cancelled before `iteration` changed anything: keep it as the point to resume from."""
        self.checkpoint(iteration, kl_coef)
        raise RunCancelled(f"stopped at iteration {iteration} of {iterations}")

    def step(self, max_grad_norm: float, accelerator: Accelerator) -> float:
        """Clip, step the optimizer and the schedule; returns the norm before clipping."""
        grad_norm = accelerator.clip_grad_norm_(self.trainable, max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(grad_norm)

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])


def prepare_optimization(
    scorer: PolicyAndValue,
    config: OnlineRLSettings,
    total_steps: int,
    accelerator: Accelerator,
    output_dir: Path,
) -> Optimization:
    """AdamW over the adapter (and the value head) with warmup and decay; the output folder's
    checkpoint restored when there is one."""
    trainable = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: runtime.learning_rate_factor(
            step, total_steps, config.warmup_ratio, config.schedule
        ),
    )
    # The scheduler stays ours: stepped once per optimizer step, not once per process.
    prepared, optimizer = accelerator.prepare(scorer, optimizer)
    prepared.eval()  # no dropout: the first pass's ratio must be exactly 1
    start_iteration, progress = runtime.load_checkpoint(
        output_dir, model=prepared, optimizer=optimizer, scheduler=scheduler
    )
    kl_coef = float(progress.get("kl_coef", config.kl_coef))
    return Optimization(
        prepared, optimizer, scheduler, trainable, output_dir, start_iteration, kl_coef
    )


def iteration_rollout(
    scorer: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    plan: IterationPlan,
    score: Scorer,
    config: OnlineRLSettings,
    iteration: int,
    accelerator: Accelerator,
    should_stop: Callable[[], bool],
) -> Rollout | None:
    """This process's share of the iteration's prompts, each answered samples_per_prompt times,
    scored; None when cancelled while sampling."""
    chosen = iteration_prompts(
        len(plan.train_prompts), config.prompts_per_iteration, iteration, config.seed
    )
    mine = chosen[accelerator.process_index :: accelerator.num_processes]
    return sample_rollout(
        scorer, tokenizer, [plan.train_prompts[i] for i in mine], score, config,
        samples_per_prompt=config.samples_per_prompt, seed=config.seed * 1_000_003 + iteration,
        accelerator=accelerator, should_stop=should_stop,
    )  # fmt: skip


def evaluate_held_out(
    scorer: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    plan: IterationPlan,
    score: Scorer,
    config: OnlineRLSettings,
    kl_coef: float,
    accelerator: Accelerator,
) -> Metrics:
    """The rollout metrics of one answer to each held-out prompt."""
    # A fixed seed: every evaluation samples with the same random numbers.
    held_out = sample_rollout(
        scorer, tokenizer, plan.eval_prompts, score, config, samples_per_prompt=1,
        seed=config.seed + 1, accelerator=accelerator, should_stop=None,
    )  # fmt: skip
    assert held_out is not None  # without should_stop it is never cancelled
    kl = kl_per_token(held_out.logprobs, held_out.ref_logprobs, config.kl_estimator)
    return rollout_metrics(held_out, kl, kl_coef)


@dataclass
class MicroBatch:
    """Rows of a rollout that go through one forward and backward of the update."""

    rows: Tensor  # (B,) indices into the rollout
    inputs: dict[str, Tensor]  # PolicyAndValue's inputs for them, trimmed: (B, T'), (B, R')
    tokens: int  # answer tokens in it
    step_tokens: int  # answer tokens in its optimizer step
    last: bool  # the step's last micro-batch: processes exchange gradients after it

    @property
    def mask(self) -> Tensor:  # (B, R')
        return self.inputs["mask"]

    @property
    def width(self) -> int:  # R', the longest answer among the rows
        return int(self.mask.shape[1])

    def of(self, per_token: Tensor) -> Tensor:
        """This micro-batch's rows of a rollout's (N, R) tensor: (B, R')."""
        return per_token[self.rows, : self.width]


def update_steps(
    rollout: Rollout, config: OnlineRLSettings, iteration: int
) -> Iterator[list[MicroBatch]]:
    """update_epochs passes over the rollout, one optimizer step (its micro-batches) at a time,
    in an order seeded by the iteration, so a resumed run repeats it."""
    inputs = rollout.model_inputs()
    rng = random.Random(f"{config.seed}:{iteration}")
    lengths = rollout.attention_mask.sum(dim=1).tolist()
    for _ in range(config.update_epochs):
        for step_rows in minibatches(lengths, config.batch_size, config.grad_accum_steps, rng):
            tokens = [int(rollout.mask[rows].sum()) for rows in step_rows]
            yield [
                MicroBatch(rows, trimmed(inputs, rows), count, sum(tokens), i == len(tokens) - 1)
                for i, (rows, count) in enumerate(zip(step_rows, tokens, strict=True))
            ]


def synced_if_last(
    micro: MicroBatch, scorer: torch.nn.Module, accelerator: Accelerator
) -> AbstractContextManager[None]:
    """Processes exchange gradients once per optimizer step, after its last micro-batch."""
    return nullcontext() if micro.last else accelerator.no_sync(scorer)


def forward_micro_batch(
    scorer: torch.nn.Module, micro: MicroBatch, accelerator: Accelerator
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-token log-probs, entropy and values (B, R') of the micro-batch, with gradients."""
    with accelerator.autocast():
        out: tuple[Tensor, Tensor, Tensor | None] = scorer(**micro.inputs)
    return out


def policy_loss(
    logprobs: Tensor, rollout: Rollout, advantages: Tensor, micro: MicroBatch, cliprange: float
) -> tuple[Tensor, Metrics]:
    """The clipped surrogate on the micro-batch's answer tokens; logprobs (B, R'), advantages
    (N, R) for the whole rollout."""
    loss, stats = clipped_policy_loss(
        logprobs, micro.of(rollout.logprobs), micro.of(advantages), micro.mask, cliprange=cliprange
    )
    stats[metric.POLICY_LOSS] = loss.item()
    return loss, stats


def entropy_bonus(loss: Tensor, entropy: Tensor, micro: MicroBatch, entropy_coef: float) -> Tensor:
    """entropy_coef > 0 pays for a spread-out distribution; at 0 the entropy is only reported."""
    if entropy_coef > 0:
        return loss - entropy_coef * masked_mean(entropy, micro.mask)
    return loss


def backward(loss: Tensor, micro: MicroBatch, accelerator: Accelerator) -> None:
    # Weighted by tokens, the accumulated loss is the mean over the step's tokens whatever the
    # micro-batches' sizes.
    accelerator.backward(loss * micro.tokens / micro.step_tokens)


def iteration_metrics(
    rollout_stats: Metrics,
    step_stats: Sequence[Metrics],
    rollout: Rollout,
    learning_rate: float,
    update_tokens: int,
    update_seconds: float,
) -> Metrics:
    """What the rollout said, the update's means over its micro-batches, and speeds."""
    return {
        **rollout_stats,
        **runtime.mean_metrics(step_stats),
        metric.LEARNING_RATE: learning_rate,
        metric.TOKENS_PER_S: rollout.new_tokens / max(rollout.seconds, 1e-9),
        metric.UPDATE_TOKENS_PER_S: update_tokens / max(update_seconds, 1e-9),
        metric.SECONDS_GENERATION: rollout.seconds,
        metric.SECONDS_UPDATE: update_seconds,
    }


def next_kl_coef(kl_coef: float, kl: float, answers: int, config: OnlineRLSettings) -> float:
    """The KL controller's beta for the next iteration: fixed unless adaptive_kl."""
    if not config.adaptive_kl:
        return kl_coef
    return adaptive_kl_coef(
        kl_coef, kl, target=config.kl_target, horizon=config.kl_horizon, steps=answers
    )


def online_result(
    output_dir: Path,
    plan: IterationPlan,
    throughput: runtime.Throughput,
    train_metrics: Metrics,
    eval_metrics: Metrics,
    start_iteration: int,
) -> TrainResult:
    return TrainResult(
        output_dir=output_dir,
        steps=plan.iterations,
        seconds=throughput.seconds,
        samples_per_second=throughput.rates()[metric.SAMPLES_PER_S],
        train_metrics=train_metrics,
        eval_metrics=eval_metrics,
        resumed_from_step=start_iteration,
    )


def save_policy_artifact(
    output_dir: Path,
    policy: PolicyAndValue,
    tokenizer: PreTrainedTokenizerBase,
    config: OnlineRLSettings,
    *,
    algorithm: Algorithm,
    prompts: int,
    result: TrainResult,
    value_head: torch.nn.Linear | None = None,
) -> None:
    """Adapter (and value head), tokenizer, config; the marker file last, and then the
    checkpoint is no longer needed."""
    (output_dir / ARTIFACT_FILE).unlink(missing_ok=True)  # the folder is no artifact until the end
    if value_head is not None:
        save_value_head(value_head, output_dir)
    save_artifact(
        output_dir,
        kind=POLICY_ADAPTER,
        model=policy.model,
        tokenizer=tokenizer,
        config=config,
        base_model=config.base_model,
        metrics=runtime.final_metrics(result.train_metrics, result.eval_metrics),
        extra={
            "algorithm": algorithm,
            "prompts": prompts,
            "iterations": result.steps,
            "value_head": VALUE_HEAD_FILE if value_head is not None else None,
        },
    )
    runtime.remove_checkpoint(output_dir)


def iteration_prompts(count: int, per_iteration: int, iteration: int, seed: int) -> list[int]:
    """Prompt indices for one iteration: seeded shuffles of the prompt set, laid end to end, so
    a resumed run draws exactly what the killed one would have."""
    chosen: list[int] = []
    while len(chosen) < per_iteration:
        epoch, offset = divmod(iteration * per_iteration + len(chosen), count)
        order = list(range(count))
        random.Random(seed + epoch).shuffle(order)
        chosen += order[offset : offset + per_iteration - len(chosen)]
    return chosen


def minibatches(
    lengths: Sequence[int], batch_size: int, accum: int, rng: random.Random
) -> list[list[Tensor]]:
    """One pass over the rollout: optimizer steps, each a list of micro-batches.

    A micro-batch holds rows of similar length (prompt + answer), so little of it is padding:
    prompts differ a lot in length, and a random mix padded every row to the longest. Rows of
    equal length are shuffled among themselves, and the order of the steps is shuffled.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    micro = [torch.tensor(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    rng.shuffle(micro)
    return [micro[i : i + accum] for i in range(0, len(micro), accum)]


# --- PPO -----------------------------------------------------------------------------------------


def train_ppo(
    prompts: list[Prompt],
    config: PPOConfig,
    output_dir: Path,
    *,
    reward: str | Path | RewardFunction,
    callbacks: Callbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter (and value head) with PPO against `reward`; resumes from
    output_dir's checkpoint if there is one. The output folder is a policy adapter artifact."""
    if not isinstance(config, PPOConfig):
        raise TypeError(f"train_ppo needs a PPOConfig, got {type(config).__name__}")
    if not prompts:
        raise ValueError("online RL needs at least one prompt")
    # Accumulation is done here (token-weighted), so accelerate must not divide the loss again.
    start = runtime.start_training(config, output_dir, callbacks, grad_accum_steps=1)
    callbacks, output_dir, accelerator = start.callbacks, start.output_dir, start.accelerator

    # --- policy, value head, reward ------------------------------------------------------------
    model, tokenizer = load_online_policy(config, start.device, cache_dir)
    hidden_size = unwrap(model).config.get_text_config(decoder=True).hidden_size
    # A previous PPO round's critic goes on with its adapter; otherwise a fresh one.
    value_head = None
    if config.init_adapter:
        value_head = load_value_head(Path(config.init_adapter), hidden_size)
    value_head = (value_head or new_value_head(hidden_size)).to(start.device)
    policy = PolicyAndValue(
        model, value_head, temperature=config.temperature, entropy_grad=config.entropy_coef > 0
    )
    score = online_reward(reward, tokenizer, config, start.device, cache_dir)

    # --- prompts and steps; optimizer over the adapter and the value head; resume --------------
    plan = plan_iterations(prompts, config, accelerator)
    training = prepare_optimization(policy, config, plan.total_steps, accelerator, output_dir)
    scorer, kl_coef = training.scorer, training.kl_coef

    throughput = runtime.Throughput()
    train_metrics: Metrics = {}
    eval_metrics: Metrics = {}
    for iteration in range(training.start_iteration, plan.iterations):
        if callbacks.should_stop():
            training.stop(iteration, plan.iterations, kl_coef)

        # --- 1. rollout: sample, score, log-probs of policy and reference, values --------------
        rollout = iteration_rollout(
            scorer, tokenizer, plan, score, config, iteration, accelerator, callbacks.should_stop
        )
        if rollout is None or callbacks.should_stop():
            training.stop(iteration, plan.iterations, kl_coef)  # nothing updated yet

        # --- 2. rewards -beta * KL + score, 3. GAE advantages and returns ----------------------
        kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs, config.kl_estimator)  # (N, R)
        rollout_stats = rollout_metrics(rollout, kl, kl_coef)
        advantages, returns, value_stats = ppo_advantages(rollout, kl, kl_coef, config)  # (N, R)
        rollout_stats.update(value_stats)
        assert rollout.values is not None  # the value head's, at sampling time

        # --- 4. update: clipped policy and value losses, token-weighted accumulation -----------
        update_started = time.perf_counter()
        step_stats: list[Metrics] = []
        update_tokens = 0
        for step_batches in update_steps(rollout, config, iteration):
            for micro in step_batches:
                with synced_if_last(micro, scorer, accelerator):
                    logprobs, entropy, values = forward_micro_batch(scorer, micro, accelerator)
                    loss, stats = policy_loss(
                        logprobs, rollout, advantages, micro, config.cliprange
                    )
                    assert values is not None
                    value_loss, value_clip = clipped_value_loss(
                        values, micro.of(rollout.values), micro.of(returns), micro.mask,
                        cliprange_value=config.cliprange_value,
                    )  # fmt: skip
                    loss = loss + config.vf_coef * value_loss
                    stats.update(value_clip)
                    stats[metric.VALUE_LOSS] = value_loss.item()
                    loss = entropy_bonus(loss, entropy, micro, config.entropy_coef)
                    backward(loss, micro, accelerator)
                step_stats.append(stats)
                update_tokens += int(micro.inputs["attention_mask"].sum())
            step_stats[-1][metric.GRAD_NORM] = training.step(config.max_grad_norm, accelerator)
        update_seconds = time.perf_counter() - update_started

        # --- 5. metrics, KL controller, evaluation, checkpoint ---------------------------------
        throughput.add(len(rollout), rollout.new_tokens)
        train_metrics = iteration_metrics(
            rollout_stats, step_stats, rollout, training.learning_rate, update_tokens,
            update_seconds,
        )  # fmt: skip
        kl_coef = next_kl_coef(kl_coef, rollout_stats[metric.KL], len(rollout), config)
        step = iteration + 1
        callbacks.on_metrics(step, "train", train_metrics)
        callbacks.on_progress(step, plan.iterations)
        if plan.evaluates_at(step, config.eval_every):
            eval_metrics = evaluate_held_out(
                scorer, tokenizer, plan, score, config, kl_coef, accelerator
            )
            callbacks.on_metrics(step, "eval", eval_metrics)
        if step % config.checkpoint_every == 0 and step < plan.iterations:
            training.checkpoint(step, kl_coef)
    accelerator.wait_for_everyone()

    # --- the artifact: adapter, value head, tokenizer, config; the marker file last -----------
    result = online_result(
        output_dir, plan, throughput, train_metrics, eval_metrics, training.start_iteration
    )
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(scorer)
        save_policy_artifact(
            output_dir, trained, tokenizer, config, algorithm="ppo", prompts=len(prompts),
            result=result, value_head=trained.value_head,
        )  # fmt: skip
    return result


# --- RLOO ----------------------------------------------------------------------------------------


def train_rloo(
    prompts: list[Prompt],
    config: RLOOConfig,
    output_dir: Path,
    *,
    reward: str | Path | RewardFunction,
    callbacks: Callbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter with RLOO against `reward`; resumes like train_ppo."""
    if not isinstance(config, RLOOConfig):
        raise TypeError(f"train_rloo needs an RLOOConfig, got {type(config).__name__}")
    if not prompts:
        raise ValueError("online RL needs at least one prompt")
    # Accumulation is done here (token-weighted), so accelerate must not divide the loss again.
    start = runtime.start_training(config, output_dir, callbacks, grad_accum_steps=1)
    callbacks, output_dir, accelerator = start.callbacks, start.output_dir, start.accelerator

    # --- policy (no value head), reward --------------------------------------------------------
    model, tokenizer = load_online_policy(config, start.device, cache_dir)
    policy = PolicyAndValue(
        model, None, temperature=config.temperature, entropy_grad=config.entropy_coef > 0
    )
    score = online_reward(reward, tokenizer, config, start.device, cache_dir)

    # --- prompts and steps; optimizer over the adapter; resume ---------------------------------
    plan = plan_iterations(prompts, config, accelerator)
    training = prepare_optimization(policy, config, plan.total_steps, accelerator, output_dir)
    scorer, kl_coef = training.scorer, training.kl_coef

    throughput = runtime.Throughput()
    train_metrics: Metrics = {}
    eval_metrics: Metrics = {}
    for iteration in range(training.start_iteration, plan.iterations):
        if callbacks.should_stop():
            training.stop(iteration, plan.iterations, kl_coef)

        # --- 1. rollout: k answers to each prompt, scored; log-probs of policy and reference ---
        rollout = iteration_rollout(
            scorer, tokenizer, plan, score, config, iteration, accelerator, callbacks.should_stop
        )
        if rollout is None or callbacks.should_stop():
            training.stop(iteration, plan.iterations, kl_coef)  # nothing updated yet

        # --- 2. rewards score - beta * KL, 3. leave-one-out advantages -------------------------
        kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs, config.kl_estimator)  # (N, R)
        rollout_stats = rollout_metrics(rollout, kl, kl_coef)
        advantages = rloo_token_advantages(rollout, kl, kl_coef, config)  # (N, R)

        # --- 4. update: clipped policy loss, token-weighted accumulation -----------------------
        update_started = time.perf_counter()
        step_stats: list[Metrics] = []
        update_tokens = 0
        for step_batches in update_steps(rollout, config, iteration):
            for micro in step_batches:
                with synced_if_last(micro, scorer, accelerator):
                    logprobs, entropy, _ = forward_micro_batch(scorer, micro, accelerator)
                    loss, stats = policy_loss(
                        logprobs, rollout, advantages, micro, config.cliprange
                    )
                    loss = entropy_bonus(loss, entropy, micro, config.entropy_coef)
                    backward(loss, micro, accelerator)
                step_stats.append(stats)
                update_tokens += int(micro.inputs["attention_mask"].sum())
            step_stats[-1][metric.GRAD_NORM] = training.step(config.max_grad_norm, accelerator)
        update_seconds = time.perf_counter() - update_started

        # --- 5. metrics, KL controller, evaluation, checkpoint ---------------------------------
        throughput.add(len(rollout), rollout.new_tokens)
        train_metrics = iteration_metrics(
            rollout_stats, step_stats, rollout, training.learning_rate, update_tokens,
            update_seconds,
        )  # fmt: skip
        kl_coef = next_kl_coef(kl_coef, rollout_stats[metric.KL], len(rollout), config)
        step = iteration + 1
        callbacks.on_metrics(step, "train", train_metrics)
        callbacks.on_progress(step, plan.iterations)
        if plan.evaluates_at(step, config.eval_every):
            eval_metrics = evaluate_held_out(
                scorer, tokenizer, plan, score, config, kl_coef, accelerator
            )
            callbacks.on_metrics(step, "eval", eval_metrics)
        if step % config.checkpoint_every == 0 and step < plan.iterations:
            training.checkpoint(step, kl_coef)
    accelerator.wait_for_everyone()

    # --- the artifact: adapter, tokenizer, config; the marker file last -------------------------
    result = online_result(
        output_dir, plan, throughput, train_metrics, eval_metrics, training.start_iteration
    )
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(scorer)
        save_policy_artifact(
            output_dir, trained, tokenizer, config, algorithm="rloo", prompts=len(prompts),
            result=result,
        )  # fmt: skip
    return result

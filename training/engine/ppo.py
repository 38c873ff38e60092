"""Online RL with LoRA: PPO with a value head, and RLOO, on answers the policy writes itself.

Reads top to bottom. Load the policy (a fresh LoRA adapter, or a previous round's), a value head
on its hidden states (PPO only) and the reward: a reward-model artifact, which scores the decoded
text with its own tokenizer, or a Python function. Then each iteration:

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

The reference is the same weights with the adapter switched off: one copy of the model. Dropout
stays off throughout (eval mode), so on the first pass over a rollout the ratio is exactly 1.
Runs on CPU, one GPU or many through `accelerate launch` (each process samples its own slice of
the iteration's prompts).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import Tensor

from training.engine import runtime
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
    frozen_plain_projection,
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
    backbone_hidden_states,
    context_length,
    freeze_in_low_precision,
    load_policy,
    load_reward_model,
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
        head = inner.get_output_embeddings()
        zeros = torch.zeros(mask.shape, device=hidden.device)  # (N, R)
        if frozen_plain_projection(head) and not self.entropy_grad:
            # A chunk of (M, V) at a time; the entropy is only reported.
            token_logps, token_entropy = projected_token_logprobs(
                hidden[mask],
                head.weight,
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

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> list[float]:
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
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            sequences = [
                p.prompt_ids + p.chosen_ids for p in pairs[start : start + self.batch_size]
            ]
            ids, attention = right_pad(sequences, self.tokenizer.pad_token_id)
            with autocast(self.precision, self.device):
                batch = reward_scores(self.model, ids.to(self.device), attention.to(self.device))
            scores += batch.float().cpu().tolist()
        return scores


def reward_scorer(
    reward: str | Path | RewardFunction,
    policy_tokenizer,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    cache_dir: Path | None,
) -> Callable[[Sequence[Prompt], Sequence[str]], list[float]]:
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
    tokenizer,
    prompts: list[Prompt],
    score: Callable[[Sequence[Prompt], Sequence[str]], list[float]],
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
        "score": rollout.raw_scores.mean().item(),
        "reward": rollout.scores.mean().item(),
        "kl": kl_per_answer.mean().item(),
        "kl_coef": kl_coef,
        "total_reward": (rollout.scores - kl_coef * kl_per_answer).mean().item(),
        "entropy": masked_mean(rollout.entropy, mask).item(),
        "answer_length": mask.sum(dim=1).float().mean().item(),
        "finished": rollout.finished.float().mean().item(),
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
        "explained_variance": explained_variance(rollout.values, returns, rollout.mask),
        "value": masked_mean(rollout.values, rollout.mask).item(),
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


# --- the loop ------------------------------------------------------------------------------------


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


def train_ppo(
    prompts: list[str | list[dict]],
    config: PPOConfig,
    output_dir: Path,
    *,
    reward: str | Path | Callable[[list[str], list[str]], list[float]],
    callbacks: Callbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter (and value head) with PPO against `reward`; resumes from
    output_dir's checkpoint if there is one. The output folder is a policy adapter artifact."""
    if not isinstance(config, PPOConfig):
        raise TypeError(f"train_ppo needs a PPOConfig, got {type(config).__name__}")
    return _train_online(
        "ppo", prompts, config, output_dir, reward=reward, callbacks=callbacks, cache_dir=cache_dir
    )


def train_rloo(
    prompts: list[str | list[dict]],
    config: RLOOConfig,
    output_dir: Path,
    *,
    reward: str | Path | Callable[[list[str], list[str]], list[float]],
    callbacks: Callbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter with RLOO against `reward`; resumes like train_ppo."""
    if not isinstance(config, RLOOConfig):
        raise TypeError(f"train_rloo needs an RLOOConfig, got {type(config).__name__}")
    return _train_online(
        "rloo", prompts, config, output_dir, reward=reward, callbacks=callbacks, cache_dir=cache_dir
    )


def _train_online(
    algorithm: Algorithm,
    prompts: list[Prompt],
    config: OnlineRLSettings,
    output_dir: Path,
    *,
    reward: str | Path | RewardFunction,
    callbacks: Callbacks | None,
    cache_dir: Path | None,
) -> TrainResult:
    config.validate()
    if not prompts:
        raise ValueError("online RL needs at least one prompt")
    callbacks = callbacks or Callbacks()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    runtime.configure_threads()
    runtime.set_seed(config.seed)
    # Accumulation is done here (token-weighted), so accelerate must not divide the loss again.
    accelerator = runtime.make_accelerator(config.precision, 1)
    device = accelerator.device

    # --- policy (fresh adapter, or the previous round's), value head, reward ----------------------
    model, tokenizer = load_policy(
        config.base_model,
        adapter=config.init_adapter,
        lora=None if config.init_adapter else config.lora,
        trainable=True,
        cache_dir=cache_dir,
        device=device,
    )
    freeze_in_low_precision(model, autocast_dtype(config.precision, device))
    value_head = None
    if algorithm == "ppo":
        hidden_size = unwrap(model).config.get_text_config(decoder=True).hidden_size
        # A previous PPO round's critic goes on with its adapter; otherwise a fresh one.
        if config.init_adapter:
            value_head = load_value_head(Path(config.init_adapter), hidden_size)
        value_head = (value_head or new_value_head(hidden_size)).to(device)
    scorer = PolicyAndValue(
        model, value_head, temperature=config.temperature, entropy_grad=config.entropy_coef > 0
    )
    score = reward_scorer(
        reward,
        tokenizer,
        device=device,
        precision=config.precision,
        batch_size=config.reward_batch_size,
        cache_dir=cache_dir,
    )

    # --- prompts: a held-out slice for evaluation, this process's share of each iteration --------
    train_index, eval_index = runtime.split_train_eval(
        len(prompts), config.eval_fraction, config.seed
    )
    train_prompts = [prompts[i] for i in train_index]
    eval_prompts = [prompts[i] for i in eval_index]
    total_iterations = config.max_steps or max(
        1, math.ceil(len(train_prompts) * config.epochs / config.prompts_per_iteration)
    )
    rows_per_iteration = (
        len(
            range(
                accelerator.process_index, config.prompts_per_iteration, accelerator.num_processes
            )
        )
        * config.samples_per_prompt
    )
    steps_per_iteration = config.update_epochs * math.ceil(
        math.ceil(rows_per_iteration / config.batch_size) / config.grad_accum_steps
    )

    # --- optimizer over the adapter and the value head; resume ------------------------------------
    trainable = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    total_steps = total_iterations * steps_per_iteration
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: runtime.learning_rate_factor(
            step, total_steps, config.warmup_ratio, config.schedule
        ),
    )
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    scorer.eval()  # no dropout: the first pass's ratio must be exactly 1
    start_iteration, progress = runtime.load_checkpoint(
        output_dir, model=scorer, optimizer=optimizer, scheduler=scheduler
    )
    kl_coef = float(progress.get("kl_coef", config.kl_coef))

    def checkpoint(iteration: int) -> None:
        runtime.save_checkpoint(
            output_dir,
            model=scorer,
            optimizer=optimizer,
            scheduler=scheduler,
            step=iteration,
            extra={"kl_coef": kl_coef},
        )

    def evaluate() -> Metrics:
        # A fixed seed: every evaluation samples with the same random numbers.
        held_out = sample_rollout(
            scorer, tokenizer, eval_prompts, score, config, samples_per_prompt=1,
            seed=config.seed + 1, accelerator=accelerator, should_stop=None,
        )  # fmt: skip
        assert held_out is not None
        kl = kl_per_token(held_out.logprobs, held_out.ref_logprobs, config.kl_estimator)
        return rollout_metrics(held_out, kl, kl_coef)

    throughput = runtime.Throughput()
    train_metrics: Metrics = {}
    eval_metrics: Metrics = {}
    for iteration in range(start_iteration, total_iterations):
        if callbacks.should_stop():
            checkpoint(iteration)
            raise RunCancelled(f"stopped at iteration {iteration} of {total_iterations}")

        # --- 1. rollout: sample, score, log-probs of policy and reference -----------------------
        chosen = iteration_prompts(
            len(train_prompts), config.prompts_per_iteration, iteration, config.seed
        )
        mine = chosen[accelerator.process_index :: accelerator.num_processes]
        rollout = sample_rollout(
            scorer, tokenizer, [train_prompts[i] for i in mine], score, config,
            samples_per_prompt=config.samples_per_prompt,
            seed=config.seed * 1_000_003 + iteration, accelerator=accelerator,
            should_stop=callbacks.should_stop,
        )  # fmt: skip
        if rollout is None or callbacks.should_stop():
            checkpoint(iteration)  # nothing was updated this iteration yet
            raise RunCancelled(f"stopped at iteration {iteration} of {total_iterations}")

        # --- 2. rewards and 3. advantages -----------------------------------------------------
        kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs, config.kl_estimator)  # (N, R)
        metrics = rollout_metrics(rollout, kl, kl_coef)
        returns = None
        if algorithm == "ppo":
            assert isinstance(config, PPOConfig)
            advantages, returns, stats = ppo_advantages(rollout, kl, kl_coef, config)
            metrics.update(stats)
        else:
            assert isinstance(config, RLOOConfig)
            advantages = rloo_token_advantages(rollout, kl, kl_coef, config)

        # --- 4. update: epochs of minibatches, token-weighted gradient accumulation ------------
        update_started = time.perf_counter()
        tensors = {
            "input_ids": rollout.input_ids,
            "attention_mask": rollout.attention_mask,
            "positions": rollout.positions,
            "answer_ids": rollout.answer_ids,
            "mask": rollout.mask,
        }
        rng = random.Random(f"{config.seed}:{iteration}")
        row_lengths = rollout.attention_mask.sum(dim=1).tolist()
        step_stats: list[Metrics] = []
        update_tokens = 0
        for _ in range(config.update_epochs):
            for step_rows in minibatches(
                row_lengths, config.batch_size, config.grad_accum_steps, rng
            ):
                step_tokens = sum(int(rollout.mask[rows].sum()) for rows in step_rows)
                for i, rows in enumerate(step_rows):
                    part = trimmed(tensors, rows)
                    r = part["mask"].shape[1]
                    last = i == len(step_rows) - 1
                    with accelerator.no_sync(scorer) if not last else nullcontext():
                        with accelerator.autocast():
                            logprobs, entropy, values = scorer(**part)
                        mask = part["mask"]
                        loss, stats = clipped_policy_loss(
                            logprobs,
                            rollout.logprobs[rows, :r],
                            advantages[rows, :r],
                            mask,
                            cliprange=config.cliprange,
                        )
                        stats["policy_loss"] = loss.item()
                        if algorithm == "ppo":
                            assert isinstance(config, PPOConfig) and returns is not None
                            assert values is not None and rollout.values is not None
                            value_loss, value_stats = clipped_value_loss(
                                values,
                                rollout.values[rows, :r],
                                returns[rows, :r],
                                mask,
                                cliprange_value=config.cliprange_value,
                            )
                            loss = loss + config.vf_coef * value_loss
                            stats.update(value_stats, value_loss=value_loss.item())
                        if config.entropy_coef > 0:
                            loss = loss - config.entropy_coef * masked_mean(entropy, mask)
                        # Weighted by tokens, the accumulated loss is the mean over the step's
                        # tokens whatever the micro-batches' sizes.
                        accelerator.backward(loss * int(mask.sum()) / step_tokens)
                    step_stats.append(stats)
                    update_tokens += int(part["attention_mask"].sum())
                grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step_stats[-1]["grad_norm"] = float(grad_norm)
        update_seconds = time.perf_counter() - update_started

        # --- 5. metrics, KL controller, checkpoint ----------------------------------------------
        throughput.add(len(rollout), rollout.new_tokens)
        train_metrics = {
            **metrics,
            **runtime.mean_metrics(step_stats),
            "learning_rate": scheduler.get_last_lr()[0],
            "tokens_per_s": rollout.new_tokens / max(rollout.seconds, 1e-9),
            "update_tokens_per_s": update_tokens / max(update_seconds, 1e-9),
            "seconds_generation": rollout.seconds,
            "seconds_update": update_seconds,
        }
        if config.adaptive_kl:
            kl_coef = adaptive_kl_coef(
                kl_coef,
                metrics["kl"],
                target=config.kl_target,
                horizon=config.kl_horizon,
                steps=len(rollout),
            )
        step = iteration + 1
        callbacks.on_metrics(step, "train", train_metrics)
        callbacks.on_progress(step, total_iterations)
        if eval_prompts and (step % config.eval_every == 0 or step == total_iterations):
            eval_metrics = evaluate()
            callbacks.on_metrics(step, "eval", eval_metrics)
        if step % config.checkpoint_every == 0 and step < total_iterations:
            checkpoint(step)
    accelerator.wait_for_everyone()

    # --- the artifact: adapter (+ value head), tokenizer, config; the marker file last ---------
    result = TrainResult(
        output_dir=output_dir,
        steps=total_iterations,
        seconds=throughput.seconds,
        samples_per_second=throughput.rates()["samples_per_s"],
        train_metrics=train_metrics,
        eval_metrics=eval_metrics,
        resumed_from_step=start_iteration,
    )
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(scorer)
        (output_dir / ARTIFACT_FILE).unlink(missing_ok=True)
        if unwrapped.value_head is not None:
            save_value_head(unwrapped.value_head, output_dir)
        save_artifact(
            output_dir,
            kind=POLICY_ADAPTER,
            model=unwrapped.model,
            tokenizer=tokenizer,
            config=config,
            base_model=config.base_model,
            metrics=runtime.final_metrics(train_metrics, eval_metrics),
            extra={
                "algorithm": algorithm,
                "prompts": len(prompts),
                "iterations": total_iterations,
                "value_head": VALUE_HEAD_FILE if unwrapped.value_head is not None else None,
            },
        )
        runtime.remove_checkpoint(output_dir)
    return result

"""Bradley-Terry reward model: learns a scalar score whose differences predict human choices.

Reads top to bottom: load the backbone with a one-output head (LoRA, or every weight for small
encoders), encode the pairs with the backbone's own tokenizer, then each step: score chosen and
rejected in one forward, Bradley-Terry loss (annotator strength as a margin, ties as a half
target). The optimizer, schedule, checkpoints and cancellation are runtime.optimize.
Runs on CPU, one GPU or many through `accelerate launch`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device

from training.engine import ensemble, runtime
from training.engine import metric_names as metric
from training.engine.config import RewardConfig, load_config
from training.engine.data import (
    EncodedPair,
    PreferenceRow,
    encode_pairs,
    with_strength_margins,
)
from training.engine.losses import bradley_terry_loss
from training.engine.models import (
    REWARD_ADAPTER,
    REWARD_FULL,
    RewardScorer,
    context_length,
    freeze_in_low_precision,
    load_reward_backbone,
    load_reward_model,
    reward_head_inputs,
    reward_head_weight,
    save_artifact,
)
from training.engine.precision import autocast_dtype
from training.engine.runtime import Callbacks, Metrics, TrainResult


def pair_scores(
    scorer: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) chosen and (B,) rejected rewards; both answers of every pair in one forward."""
    scores = scorer(send_to_device(batch, device))  # (2B,)
    half = scores.shape[0] // 2
    return scores[:half], scores[half:]


def pair_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    batch: dict[str, torch.Tensor],
    center_rewards: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """Bradley-Terry loss on the batch, plus center_rewards x the mean squared reward sum: the
    pairwise loss sees only differences, so without it every reward may drift by a shared
    offset, and the scores a gate or PPO reads are not comparable across trainings."""
    loss, stats = bradley_terry_loss(
        chosen,
        rejected,
        target=batch["target"].to(chosen.device),
        margin=batch["margin"].to(chosen.device),
        weight=batch["weight"].to(chosen.device),
    )
    if center_rewards:
        loss = loss + center_rewards * (chosen + rejected).square().mean()
    return loss, stats


def batches_by_length(
    scorer: RewardScorer, pairs: list[EncodedPair], batch_size: int
) -> Iterator[list[int]]:
    """Pair indices in batches of similar length, so little goes to padding."""
    order = sorted(range(len(pairs)), key=lambda i: scorer.cost(pairs[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def score_pairs(
    scorer: RewardScorer,
    pairs: list[EncodedPair],
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> torch.Tensor:  # (N, 2): each pair's chosen and rejected reward, in the order given
    """Score every pair, batched by length so little goes to padding."""
    was_training = scorer.training
    scorer.eval()
    out = torch.zeros(len(pairs), 2)
    for index in batches_by_length(scorer, pairs, batch_size):
        batch = scorer.collate([pairs[i] for i in index], pad_id)
        with accelerator.autocast():
            chosen, rejected = pair_scores(scorer, batch, accelerator.device)
        out[index, 0], out[index, 1] = chosen.float().cpu(), rejected.float().cpu()
    scorer.train(was_training)
    return out


@torch.inference_mode()
def pair_features(
    scorer: RewardScorer,
    pairs: list[EncodedPair],
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> tuple[torch.Tensor, torch.Tensor]:  # (N, H) chosen and (N, H) rejected, in the order given
    """The features the reward head reads for both answers of every pair."""
    was_training = scorer.training
    scorer.eval()
    chosen: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    rejected: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    with reward_head_inputs(scorer.model) as captured:
        for index in batches_by_length(scorer, pairs, batch_size):
            batch = scorer.collate([pairs[i] for i in index], pad_id)
            captured.clear()
            with accelerator.autocast():
                scorer(send_to_device(batch, accelerator.device))
            both = captured[-1].cpu()  # (2B, H): chosen answers, then rejected ones
            for offset, i in enumerate(index):
                chosen[i], rejected[i] = both[offset], both[len(index) + offset]
    scorer.train(was_training)
    return torch.stack(chosen), torch.stack(rejected)


def fit_doubt(
    scorer: RewardScorer,
    pairs: list[EncodedPair],
    config: RewardConfig,
    pad_id: int,
    accelerator: Accelerator,
) -> tuple[torch.Tensor | None, ensemble.HeadPosterior | None]:  # (K, H) heads, posterior
    """engine.ensemble's bootstrap heads and the head's Laplace posterior, as the config asks,
    on the trained model's features of its training pairs (computed once for both)."""
    chosen, rejected = pair_features(scorer, pairs, config.batch_size * 2, pad_id, accelerator)
    target = torch.tensor([pair.target for pair in pairs])
    trained_head = reward_head_weight(scorer.model)
    heads = posterior = None
    if config.ensemble_heads:
        heads = ensemble.fit_bootstrap_heads(
            chosen, rejected, target, start=trained_head, heads=config.ensemble_heads,
            seed=config.seed,
        )  # fmt: skip
    if config.head_posterior:
        posterior = ensemble.HeadPosterior.fit(chosen, rejected, target, at=trained_head)
    return heads, posterior


def evaluate(
    scorer: RewardScorer,
    pairs: list[EncodedPair],
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> Metrics:
    """Loss, pairwise accuracy and mean margin on held-out pairs (pooled, not batch-averaged)."""
    scores = score_pairs(scorer, pairs, batch_size, pad_id, accelerator)
    target = torch.tensor([pair.target for pair in pairs], dtype=torch.float32)
    loss, stats = bradley_terry_loss(scores[:, 0], scores[:, 1], target=target)
    return runtime.mean_metrics([{metric.LOSS: loss.item(), **stats}])


def train_reward(
    rows: list[PreferenceRow],
    config: RewardConfig,
    output_dir: Path,
    *,
    callbacks: Callbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a reward model; resumes from output_dir's checkpoint if there is one."""
    start = runtime.start_training(
        config, output_dir, callbacks, grad_accum_steps=config.grad_accum_steps
    )
    callbacks, output_dir, accelerator = start.callbacks, start.output_dir, start.accelerator
    device = start.device

    # --- model: backbone + one-output head -----------------------------------------------------
    model, tokenizer = load_reward_backbone(
        config.base_model,
        use_lora=config.use_lora,
        lora=config.lora,
        cache_dir=cache_dir,
        device=device,
    )
    freeze_in_low_precision(model, autocast_dtype(config.precision, device))
    scorer = RewardScorer(model)
    collate, cost = scorer.collate, scorer.cost  # accelerate may wrap the scorer later
    pad_id = tokenizer.pad_token_id

    # --- data: the backbone's own tokens, a held-out slice --------------------------------------
    pairs = encode_pairs(
        with_strength_margins(rows, config.strength_margins),
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        context_length=context_length(model),
    )
    train_index, eval_index = runtime.split_train_eval(
        len(pairs), config.eval_fraction, config.seed
    )
    train_pairs = [pairs[i] for i in train_index]
    eval_pairs = [pairs[i] for i in eval_index]

    # --- the loop: score chosen and rejected in one forward, Bradley-Terry loss -----------------
    def batch_loss(
        scorer: torch.nn.Module, batch_index: list[int]
    ) -> tuple[torch.Tensor, Metrics, int]:
        batch = collate([train_pairs[i] for i in batch_index], pad_id)
        with accelerator.autocast():
            chosen, rejected = pair_scores(scorer, batch, device)
        loss, stats = pair_loss(chosen.float(), rejected.float(), batch, config.center_rewards)
        return loss, stats, int(batch["num_tokens"])

    def held_out(prepared: torch.nn.Module) -> Metrics:
        # No gradients here, so the wrapper accelerate put around the scorer is not needed.
        scorer = accelerator.unwrap_model(prepared)
        return evaluate(scorer, eval_pairs, config.batch_size * 2, pad_id, accelerator)

    trained, result = runtime.optimize(
        accelerator=accelerator,
        model=scorer,
        config=config,
        lengths=[cost(pair) for pair in train_pairs],
        batch_loss=batch_loss,
        evaluate=held_out if eval_pairs else None,
        output_dir=output_dir,
        callbacks=callbacks,
    )

    # --- the artifact: weights, tokenizer, config, the doubt's heads; the marker file last -----
    if accelerator.is_main_process:
        if (config.ensemble_heads or config.head_posterior) and train_pairs:
            trained_scorer = accelerator.unwrap_model(trained)
            heads, posterior = fit_doubt(trained_scorer, train_pairs, config, pad_id, accelerator)
            output_dir.mkdir(parents=True, exist_ok=True)
            if heads is not None:
                ensemble.save_heads(output_dir, heads)
            if posterior is not None:
                ensemble.save_posterior(output_dir, posterior)
        save_artifact(
            output_dir,
            kind=REWARD_ADAPTER if config.use_lora else REWARD_FULL,
            model=accelerator.unwrap_model(trained).model,
            tokenizer=tokenizer,
            config=config,
            base_model=config.base_model,
            metrics=runtime.final_metrics(result.train_metrics, result.eval_metrics),
            extra={"pairs": len(pairs), "train_pairs": len(train_pairs), "steps": result.steps},
        )
        runtime.remove_checkpoint(output_dir)
    return result


def evaluate_reward_model(
    artifact: Path,
    rows: list[PreferenceRow],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    precision: str = "auto",
    cache_dir: Path | None = None,
) -> Metrics:
    """Pairwise accuracy (and loss, margin) of a trained reward model on preference rows.

    Lengths default to the ones the model was trained with.
    """
    trained_with = load_config(artifact)
    max_length = max_length or trained_with.max_length
    max_prompt_length = max_prompt_length or trained_with.max_prompt_length
    accelerator = runtime.make_accelerator(precision, 1)
    model, tokenizer = load_reward_model(artifact, cache_dir=cache_dir, device=accelerator.device)
    pairs = encode_pairs(
        rows,
        tokenizer,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        context_length=context_length(model),
    )
    metrics = evaluate(RewardScorer(model), pairs, batch_size, tokenizer.pad_token_id, accelerator)
    return {**metrics, metric.PAIRS: float(len(pairs))}

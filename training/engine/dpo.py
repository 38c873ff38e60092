"""Direct Preference Optimization with LoRA: the policy learns straight from human pairs.

Reads top to bottom: load the policy (a fresh adapter, or the previous round's to continue),
encode the pairs, compute the reference log-probs once (the base with the adapter switched off,
or the starting adapter), then each step: forward chosen and rejected together, DPO loss. The
optimizer, schedule, checkpoints and cancellation are runtime.optimize, shared with reward.py.
Runs on CPU, one GPU or many through `accelerate launch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from peft import PeftModel

from training.engine import metric_names as metric
from training.engine import runtime
from training.engine.config import DPOConfig
from training.engine.data import (
    EncodedPair,
    PreferenceRow,
    encode_pairs,
    with_strength_weights,
)
from training.engine.losses import dpo_loss
from training.engine.models import (
    POLICY_ADAPTER,
    PolicyLogprobs,
    context_length,
    freeze_in_low_precision,
    load_policy,
    save_artifact,
)
from training.engine.precision import autocast_dtype
from training.engine.runtime import Callbacks, Metrics, TrainResult

REFERENCE_FILE = "reference_logps.pt"


def decided_rows(rows: list[PreferenceRow]) -> list[PreferenceRow]:
    """DPO needs a winner: ties carry no direction and are left out; a row whose target says
    the "rejected" answer is the better one is turned around."""
    decided = []
    for row in rows:
        if row.target > 0.5:
            decided.append(row)
        elif row.target < 0.5:
            decided.append(replace(row, chosen=row.rejected, rejected=row.chosen, target=1.0))
    return decided


def policy_logps(
    scorer: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    *,
    per_token: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) chosen and (B,) rejected log-probs; both answers of every pair in one forward.

    per_token averages over each answer's tokens instead of summing (what IPO is defined on).
    """
    batch = send_to_device(batch, device)
    logps = scorer(batch)  # (2B,)
    if per_token:
        logps = logps / batch["answer_lengths"].clamp(min=1)
    half = logps.shape[0] // 2
    return logps[:half], logps[half:]


@torch.inference_mode()
def reference_logps(
    scorer: PolicyLogprobs,
    pairs: list[EncodedPair],
    *,
    adapter_off: bool,
    per_token: bool,
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> torch.Tensor:  # (N, 2): chosen, rejected
    """The reference model's log-probs, computed once per data set instead of every step."""
    out = torch.zeros(len(pairs), 2)
    order = sorted(range(len(pairs)), key=lambda i: scorer.cost(pairs[i]))
    model = scorer.model
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = scorer.collate([pairs[i] for i in index], pad_id)
        with accelerator.autocast():
            if adapter_off:
                assert isinstance(model, PeftModel)  # DPO's policy always carries an adapter
                with model.disable_adapter():
                    chosen, rejected = policy_logps(
                        scorer, batch, accelerator.device, per_token=per_token
                    )
            else:
                chosen, rejected = policy_logps(
                    scorer, batch, accelerator.device, per_token=per_token
                )
        out[index, 0], out[index, 1] = chosen.float().cpu(), rejected.float().cpu()
    model.train(was_training)
    return out


def load_or_compute_reference(
    output_dir: Path, compute: Callable[[], torch.Tensor], count: int
) -> torch.Tensor:
    """A resumed run reuses the reference it computed before it was stopped."""
    path = Path(output_dir) / REFERENCE_FILE
    if path.exists():
        saved: torch.Tensor = torch.load(path)
        if saved.shape == (count, 2):
            return saved
    reference = compute()
    torch.save(reference, path)
    return reference


@torch.inference_mode()
def evaluate(
    scorer: PolicyLogprobs,
    pairs: list[EncodedPair],
    reference: torch.Tensor,
    config: DPOConfig,
    pad_id: int,
    accelerator: Accelerator,
) -> Metrics:
    scorer.eval()
    rows: list[Metrics] = []
    for start in range(0, len(pairs), config.batch_size * 2):
        chunk = list(range(start, min(start + config.batch_size * 2, len(pairs))))
        batch = scorer.collate([pairs[i] for i in chunk], pad_id)
        with accelerator.autocast():
            chosen, rejected = policy_logps(
                scorer, batch, accelerator.device, per_token=config.loss_type == "ipo"
            )
        ref = reference[chunk].to(accelerator.device)
        loss, stats = dpo_loss(
            chosen.float(),
            rejected.float(),
            ref[:, 0],
            ref[:, 1],
            beta=config.beta,
            loss_type=config.loss_type,
            label_smoothing=config.label_smoothing,
        )
        rows.append({metric.LOSS: loss.item(), **stats})
    scorer.train()
    return runtime.mean_metrics(rows)


def train_dpo(
    rows: list[PreferenceRow],
    config: DPOConfig,
    output_dir: Path,
    *,
    callbacks: Callbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter with DPO; resumes from output_dir's checkpoint if there is one."""
    start = runtime.start_training(
        config, output_dir, callbacks, grad_accum_steps=config.grad_accum_steps
    )
    callbacks, output_dir, accelerator = start.callbacks, start.output_dir, start.accelerator
    device = start.device

    # --- policy: continue the previous round's adapter, or start a fresh one ---------------------
    model, tokenizer = load_policy(
        config.base_model,
        adapter=config.init_adapter,
        lora=None if config.init_adapter else config.lora,
        trainable=True,
        cache_dir=cache_dir,
        device=device,
    )
    freeze_in_low_precision(model, autocast_dtype(config.precision, device))
    scorer = PolicyLogprobs(model)
    collate = scorer.collate  # accelerate may wrap the scorer later
    pad_id = tokenizer.pad_token_id

    # --- data: token ids, a held-out slice ------------------------------------------------------
    pairs = encode_pairs(
        with_strength_weights(decided_rows(rows), config.strength_weights),
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

    # --- reference log-probs, once ----------------------------------------------------------------
    reference = load_or_compute_reference(
        output_dir,
        lambda: reference_logps(
            scorer,
            pairs,
            adapter_off=config.reference == "base",
            per_token=config.loss_type == "ipo",
            batch_size=config.batch_size * 2,
            pad_id=pad_id,
            accelerator=accelerator,
        ),
        len(pairs),
    )
    train_reference, eval_reference = reference[train_index], reference[eval_index]

    # --- the loop: one forward for chosen and rejected, DPO loss -------------------------------
    per_token = config.loss_type == "ipo"

    def batch_loss(
        scorer: torch.nn.Module, batch_index: list[int]
    ) -> tuple[torch.Tensor, Metrics, int]:
        batch = collate([train_pairs[i] for i in batch_index], pad_id)
        ref = train_reference[batch_index].to(device)
        with accelerator.autocast():
            chosen, rejected = policy_logps(scorer, batch, device, per_token=per_token)
        loss, stats = dpo_loss(
            chosen.float(),
            rejected.float(),
            ref[:, 0],
            ref[:, 1],
            beta=config.beta,
            loss_type=config.loss_type,
            label_smoothing=config.label_smoothing,
            weight=batch["weight"].to(device),
        )
        return loss, stats, int(batch["num_tokens"])

    def held_out(prepared: torch.nn.Module) -> Metrics:
        # No gradients here, so the wrapper accelerate put around the scorer is not needed.
        scorer = accelerator.unwrap_model(prepared)
        return evaluate(scorer, eval_pairs, eval_reference, config, pad_id, accelerator)

    trained, result = runtime.optimize(
        accelerator=accelerator,
        model=scorer,
        config=config,
        lengths=[scorer.cost(pair) for pair in train_pairs],
        batch_loss=batch_loss,
        evaluate=held_out if eval_pairs else None,
        output_dir=output_dir,
        callbacks=callbacks,
    )

    # --- the artifact: adapter, tokenizer, config; the marker file last --------------------------
    if accelerator.is_main_process:
        save_artifact(
            output_dir,
            kind=POLICY_ADAPTER,
            model=accelerator.unwrap_model(trained).model,
            tokenizer=tokenizer,
            config=config,
            base_model=config.base_model,
            metrics=runtime.final_metrics(result.train_metrics, result.eval_metrics),
            extra={"pairs": len(pairs), "train_pairs": len(train_pairs), "steps": result.steps},
        )
        runtime.remove_checkpoint(output_dir)
        (output_dir / REFERENCE_FILE).unlink(missing_ok=True)
    return result

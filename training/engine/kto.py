"""Kahneman-Tversky Optimization with LoRA: the policy learns from answers rated on their own.

Reads top to bottom: load the policy (a fresh adapter, or the previous round's to continue),
encode the rated answers and, for each, a mismatched pair (its prompt with another row's
answer), compute the reference log-probs of both once (the base with the adapter switched off,
or the starting adapter), then each step: forward the batch's answers, forward their mismatched
pairs without gradient for the reference point z_ref, KTO loss (losses.kto_loss). The optimizer,
schedule, checkpoints and cancellation are runtime.optimize; answers are scored and packed as in
SFT (sft.CompletionLogprobs). The artifact is a policy adapter, as DPO's and SFT's.

Its own loop, not a mode of dpo.py: the two share a shape (a policy, a reference computed once,
runtime.optimize) and the helper that proves it (dpo.load_or_compute_reference), but differ in
every section in between: the rows, what is encoded, what the reference is computed for, the
batch loss and the held-out metrics. As a mode, each section of dpo.py would branch and neither
loop would read top to bottom.

The reference point: TRL pairs each prompt with another answer by rotating the completions
within each batch, its batches being sequential. Batches here are length-bucketed and shuffled
anew each epoch, so the pairing is fixed instead: a seeded cycle through the rows gives each
prompt the answer of the next row in it (within the training rows, and within the held-out
ones), so the reference log-probs of the mismatched pairs are computed once, as the matched
ones are. z_ref is still estimated per batch, from that batch's mismatched pairs, as in the paper.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from peft import PeftModel

from training.engine import metric_names as metric
from training.engine import runtime
from training.engine.config import KTOConfig
from training.engine.data import (
    EncodedCompletion,
    RatingRow,
    encode_completions,
    with_desirable_score,
)
from training.engine.dpo import REFERENCE_FILE, load_or_compute_reference
from training.engine.losses import kto_loss
from training.engine.models import (
    POLICY_ADAPTER,
    context_length,
    freeze_in_low_precision,
    load_policy,
    save_artifact,
)
from training.engine.precision import autocast_dtype
from training.engine.runtime import Callbacks, Metrics, TrainResult
from training.engine.sft import CompletionLogprobs, completion_logps


def mismatched_pairs(
    items: Sequence[EncodedCompletion], max_length: int, seed: int
) -> list[EncodedCompletion]:
    """Each row's prompt with the answer of the row after it in a seeded cycle (cut to fit
    max_length): every answer is used once, never with its own row's prompt (unless there is
    only one row)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    partner = {row: order[(k + 1) % len(order)] for k, row in enumerate(order)}
    return [
        EncodedCompletion(
            item.prompt_ids,
            items[partner[i]].completion_ids[: max_length - len(item.prompt_ids)],
            item.row,
        )
        for i, item in enumerate(items)
    ]


def reference_logps(
    scorer: CompletionLogprobs,
    items: Sequence[EncodedCompletion],
    mismatched: Sequence[EncodedCompletion],
    *,
    adapter_off: bool,
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> torch.Tensor:  # (N, 2): each answer, and its row's mismatched pair
    """The reference model's log-probs, computed once per data set instead of every step."""
    model = scorer.model
    off: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if adapter_off:
        assert isinstance(model, PeftModel)  # KTO's policy always carries an adapter
        off = model.disable_adapter()
    with off:
        answers, pairs = (
            completion_logps(
                scorer, part, batch_size=batch_size, pad_id=pad_id, accelerator=accelerator
            )
            for part in (items, mismatched)
        )
    return torch.stack([answers, pairs], dim=1)


def evaluate(
    scorer: CompletionLogprobs,
    items: Sequence[EncodedCompletion],
    mismatched: Sequence[EncodedCompletion],
    reference: torch.Tensor,
    desirable: torch.Tensor,
    config: KTOConfig,
    pad_id: int,
    accelerator: Accelerator,
) -> Metrics:
    """Held-out KTO loss and implicit rewards, z_ref from every held-out mismatched pair."""
    logps, kl_logps = (
        completion_logps(
            scorer, part, batch_size=config.batch_size * 2, pad_id=pad_id, accelerator=accelerator
        )
        for part in (items, mismatched)
    )
    loss, stats = kto_loss(
        logps,
        reference[:, 0],
        desirable,
        kl_logps,
        reference[:, 1],
        beta=config.beta,
        desirable_weight=config.desirable_weight,
        undesirable_weight=config.undesirable_weight,
    )
    return runtime.mean_metrics([{metric.LOSS: loss.item(), **stats}])  # drops a nan reward


def train_kto(
    rows: list[RatingRow],
    config: KTOConfig,
    output_dir: Path,
    *,
    callbacks: Callbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter with KTO; resumes from output_dir's checkpoint if there is one."""
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
    scorer = CompletionLogprobs(model, packing=True, max_length=config.max_length)
    collate = scorer.collate  # accelerate may wrap the scorer later
    pad_id = tokenizer.pad_token_id

    # --- data: token ids, a held-out slice, each slice's mismatched pairs -------------------------
    rows = with_desirable_score(rows, config.desirable_score)
    answers = encode_completions(
        rows,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        context_length=context_length(model),
    )
    train_index, eval_index = runtime.split_train_eval(
        len(answers), config.eval_fraction, config.seed
    )
    train_items = [answers[i] for i in train_index]
    eval_items = [answers[i] for i in eval_index]
    train_mismatched = mismatched_pairs(train_items, config.max_length, config.seed)
    eval_mismatched = mismatched_pairs(eval_items, config.max_length, config.seed)
    desirable = torch.tensor([row.desirable for row in rows], dtype=torch.bool)
    train_desirable, eval_desirable = desirable[train_index], desirable[eval_index]

    # --- reference log-probs of every answer and mismatched pair, once -------------------------
    reference = load_or_compute_reference(
        output_dir,
        lambda: reference_logps(
            scorer,
            train_items + eval_items,
            train_mismatched + eval_mismatched,
            adapter_off=config.reference == "base",
            batch_size=config.batch_size * 2,
            pad_id=pad_id,
            accelerator=accelerator,
        ),
        len(answers),
    )
    train_reference, eval_reference = reference[: len(train_items)], reference[len(train_items) :]

    # --- the loop: the answers with gradient, their mismatched pairs without, KTO loss ----------
    def batch_loss(
        scorer: torch.nn.Module, batch_index: list[int]
    ) -> tuple[torch.Tensor, Metrics, int]:
        batch = collate([train_items[i] for i in batch_index], pad_id)
        kl_batch = collate([train_mismatched[i] for i in batch_index], pad_id)
        ref = train_reference[batch_index].to(device)
        with accelerator.autocast():
            logps = scorer(send_to_device(batch, device))  # (B,)
            # z_ref carries no gradient, so these tokens need no backward pass (nor DDP's sync).
            with torch.no_grad():
                kl_logps = accelerator.unwrap_model(scorer)(send_to_device(kl_batch, device))
        loss, stats = kto_loss(
            logps.float(),
            ref[:, 0],
            train_desirable[batch_index].to(device),
            kl_logps.float(),
            ref[:, 1],
            beta=config.beta,
            desirable_weight=config.desirable_weight,
            undesirable_weight=config.undesirable_weight,
        )
        return loss, stats, int(batch["num_tokens"])

    def held_out(prepared: torch.nn.Module) -> Metrics:
        scorer = accelerator.unwrap_model(prepared)
        return evaluate(
            scorer,
            eval_items,
            eval_mismatched,
            eval_reference,
            eval_desirable,
            config,
            pad_id,
            accelerator,
        )

    trained, result = runtime.optimize(
        accelerator=accelerator,
        model=scorer,
        config=config,
        lengths=[item.length for item in train_items],
        batch_loss=batch_loss,
        evaluate=held_out if eval_items else None,
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
            extra={
                "ratings": len(answers),
                "desirable": int(desirable.sum()),
                "train_ratings": len(train_items),
                "steps": result.steps,
            },
        )
        runtime.remove_checkpoint(output_dir)
        (output_dir / REFERENCE_FILE).unlink(missing_ok=True)
    return result

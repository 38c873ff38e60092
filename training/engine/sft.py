"""Supervised fine-tuning with LoRA: the policy learns to write the demonstrated answers.

Reads top to bottom: load the policy (a fresh adapter, or an earlier one to continue), encode
the demonstrations, then each step: the batch's demonstrations packed several to a row with
attention kept inside each, one forward, the mean negative log-likelihood of the answer tokens
(the prompt is context, never a target). The optimizer, schedule, checkpoints and cancellation
are runtime.optimize, shared with dpo.py and reward.py. The artifact is a policy adapter laid out
as DPO's, so a DPO round can start from it (DPOConfig.init_adapter). CompletionLogprobs, which
scores single answers in either layout, serves kto.py too. Runs on CPU, one GPU or many through
`accelerate launch`.

Packing is per batch: the batch_size demonstrations of a step share as few rows of max_length as
keep padding lowest (data.pack_rows), instead of the whole data set being cut into rows of
max_length as TRL does. A demonstration stays the unit, so batch_size, epochs, samples/s and the
loss mean the same with packing on or off, and the length-bucketed batches, resume and cancel of
runtime.optimize work unchanged. The packed layout is the pair batches' (block-causal mask,
positions restarting per sequence) and goes through the same model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device

from training.engine import metric_names as metric
from training.engine import runtime
from training.engine.config import SFTConfig
from training.engine.data import (
    DemonstrationRow,
    EncodedCompletion,
    collate_completions,
    collate_packed_completions,
    encode_completions,
)
from training.engine.losses import sft_loss
from training.engine.models import (
    POLICY_ADAPTER,
    completion_logprobs,
    context_length,
    freeze_in_low_precision,
    load_policy,
    packed_completion_logprobs,
    packs_pairs,
    save_artifact,
)
from training.engine.precision import autocast_dtype
from training.engine.runtime import Callbacks, Metrics, TrainResult


class CompletionLogprobs(torch.nn.Module):
    """forward(batch) -> (N,) summed log-prob of each answer given its prompt.

    Batches are packed several answers to a row when asked for and the model takes a custom
    mask (models.packs_pairs), else one right-padded row each. The loops call this module, not
    the model's forward: under DistributedDataParallel it is the wrapped module that must run.
    """

    def __init__(self, model: torch.nn.Module, *, packing: bool, max_length: int) -> None:
        super().__init__()
        self.model = model
        self.packed = packing and packs_pairs(model)
        self.max_length = max_length

    def collate(self, items: Sequence[EncodedCompletion], pad_id: int) -> dict[str, Any]:
        if self.packed:
            return collate_packed_completions(items, pad_id, max_length=self.max_length)
        return collate_completions(items, pad_id)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.packed:
            return packed_completion_logprobs(self.model, batch)
        return completion_logprobs(
            self.model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
        )


@torch.inference_mode()
def completion_logps(
    scorer: CompletionLogprobs,
    items: Sequence[EncodedCompletion],
    *,
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> torch.Tensor:  # (N,) in the order given
    """Every answer's summed log-prob, batched by length so little goes to padding."""
    was_training = scorer.training
    scorer.eval()
    out = torch.zeros(len(items))
    order = sorted(range(len(items)), key=lambda i: items[i].length)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = scorer.collate([items[i] for i in index], pad_id)
        with accelerator.autocast():
            out[index] = scorer(send_to_device(batch, accelerator.device)).float().cpu()
    scorer.train(was_training)
    return out


def evaluate(
    scorer: CompletionLogprobs,
    items: Sequence[EncodedCompletion],
    batch_size: int,
    pad_id: int,
    accelerator: Accelerator,
) -> Metrics:
    """Held-out loss pooled over every answer token (not a mean of batch means)."""
    logps = completion_logps(
        scorer, items, batch_size=batch_size, pad_id=pad_id, accelerator=accelerator
    )
    lengths = torch.tensor([len(item.completion_ids) for item in items])
    loss, stats = sft_loss(logps, lengths)
    return {metric.LOSS: loss.item(), **stats}


def train_sft(
    rows: list[DemonstrationRow],
    config: SFTConfig,
    output_dir: Path,
    *,
    callbacks: Callbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter on demonstrations; resumes from output_dir's checkpoint if any."""
    start = runtime.start_training(
        config, output_dir, callbacks, grad_accum_steps=config.grad_accum_steps
    )
    callbacks, output_dir, accelerator = start.callbacks, start.output_dir, start.accelerator
    device = start.device

    # --- policy: continue an earlier adapter, or start a fresh one --------------------------------
    model, tokenizer = load_policy(
        config.base_model,
        adapter=config.init_adapter,
        lora=None if config.init_adapter else config.lora,
        trainable=True,
        cache_dir=cache_dir,
        device=device,
    )
    freeze_in_low_precision(model, autocast_dtype(config.precision, device))
    scorer = CompletionLogprobs(model, packing=config.packing, max_length=config.max_length)
    collate = scorer.collate  # accelerate may wrap the scorer later
    pad_id = tokenizer.pad_token_id

    # --- data: token ids, a held-out slice ------------------------------------------------------
    demonstrations = encode_completions(
        rows,
        tokenizer,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        context_length=context_length(model),
    )
    train_index, eval_index = runtime.split_train_eval(
        len(demonstrations), config.eval_fraction, config.seed
    )
    train_items = [demonstrations[i] for i in train_index]
    eval_items = [demonstrations[i] for i in eval_index]

    # --- the loop: one forward over the packed rows, loss on the answer tokens only -------------
    def batch_loss(
        scorer: torch.nn.Module, batch_index: list[int]
    ) -> tuple[torch.Tensor, Metrics, int]:
        batch = collate([train_items[i] for i in batch_index], pad_id)
        with accelerator.autocast():
            logps = scorer(send_to_device(batch, device))  # (N,)
        loss, stats = sft_loss(logps.float(), batch["answer_lengths"].to(device))
        return loss, stats, int(batch["num_tokens"])

    def held_out(prepared: torch.nn.Module) -> Metrics:
        # No gradients here, so the wrapper accelerate put around the scorer is not needed.
        scorer = accelerator.unwrap_model(prepared)
        return evaluate(scorer, eval_items, config.batch_size * 2, pad_id, accelerator)

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

    # --- the artifact: a policy adapter as DPO writes it; the marker file last -------------------
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
                "demonstrations": len(demonstrations),
                "train_demonstrations": len(train_items),
                "steps": result.steps,
            },
        )
        runtime.remove_checkpoint(output_dir)
    return result

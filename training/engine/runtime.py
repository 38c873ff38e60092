"""What every training loop needs besides its loss: callbacks, schedule, seeds, checkpoints.

The loops themselves (reward.py, dpo.py, ppo.py) read top to bottom; this module keeps the
plumbing they share in one place so a fix to checkpointing or cancellation lands in every loop
at once.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from training.engine import metric_names as metric
from training.engine.config import TrainingSettings
from training.engine.precision import autocast_dtype

CHECKPOINT_DIR = "checkpoint"
Metrics = dict[str, float]


class RunCancelled(Exception):
    """Raised inside a loop when the should_stop callback asks it to stop."""


@dataclass
class Callbacks:
    """How a loop talks to the outside world (the CLI's progress bar, the Celery task's row)."""

    on_metrics: Callable[[int, str, Metrics], None] = lambda step, split, metrics: None
    on_progress: Callable[[int, int], None] = lambda step, total: None
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    seconds: float
    samples_per_second: float
    train_metrics: Metrics = field(default_factory=dict)
    eval_metrics: Metrics = field(default_factory=dict)
    resumed_from_step: int = 0


@dataclass(frozen=True)
class TrainerStart:
    """What every training loop begins with (start_training)."""

    callbacks: Callbacks
    output_dir: Path
    accelerator: Accelerator

    @property
    def device(self) -> torch.device:
        device: torch.device = self.accelerator.device
        return device


def start_training(
    config: TrainingSettings,
    output_dir: str | Path,
    callbacks: Callbacks | None,
    *,
    grad_accum_steps: int,
) -> TrainerStart:
    """Every loop's prologue: settings checked before anything is loaded, the output folder,
    threads, seeds and the accelerator.

    grad_accum_steps is what accelerate accumulates over (and divides the loss by): the
    config's for the loops that let it, 1 for those that weight micro-batches themselves.
    """
    config.validate()
    callbacks = callbacks or Callbacks()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    configure_threads()
    set_seed(config.seed)
    accelerator = make_accelerator(config.precision, grad_accum_steps)
    return TrainerStart(callbacks, output_dir, accelerator)


def make_accelerator(precision: str, grad_accum_steps: int) -> Accelerator:
    """One process per device under `accelerate launch`; bf16 autocast where it is fast."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = autocast_dtype(precision, device) is not None
    # A worker process runs many jobs with different settings; accelerate keeps the first job's
    # precision in a process-wide singleton unless told to forget it (the process group stays).
    AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision="bf16" if bf16 else "no",
        gradient_accumulation_steps=grad_accum_steps,
        cpu=device.type == "cpu",
    )


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def configure_threads() -> None:
    """Use every core for intra-op work; on small CPUs inter-op threads only add contention."""
    if torch.get_num_interop_threads() > 1:
        with suppress(RuntimeError):  # it may be set only once per process
            torch.set_num_interop_threads(1)


def limit_threads(count: int) -> None:
    """At most `count` intra-op threads (0: torch's default, every core). On a machine that
    also serves the web app, fewer threads leave it a core: torch's threads spin while they
    wait, so two heavy processes on the same cores slow each other down many times over."""
    if count > 0 and torch.get_num_threads() != count:
        torch.set_num_threads(count)


def split_train_eval(count: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded held-out slice; at least one eval row when a fraction is asked for and possible."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    eval_count = math.ceil(count * eval_fraction) if eval_fraction > 0 and count > 1 else 0
    return sorted(order[eval_count:]), sorted(order[:eval_count])


def learning_rate_factor(step: int, total: int, warmup_ratio: float, schedule: str) -> float:
    """Linear warmup, then cosine, linear or constant decay; `step` counts optimizer steps."""
    warmup = int(total * warmup_ratio)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the weights being trained (LoRA, heads): checkpoints stay small."""
    return {
        name: param.detach().cpu().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def save_checkpoint(
    output_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint beside the old one and swap, so a kill mid-write loses nothing."""
    final = Path(output_dir) / CHECKPOINT_DIR
    partial = Path(output_dir) / f".{CHECKPOINT_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    torch.save(
        {
            "trainable": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        },
        partial / "state.pt",
    )
    (partial / "progress.json").write_text(json.dumps({"step": step, **(extra or {})}))
    old = Path(output_dir) / f".{CHECKPOINT_DIR}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    output_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> tuple[int, dict[str, Any]]:
    """Restore a run's last checkpoint; returns (step, progress info). Step 0 if none."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not (folder / "progress.json").exists():
        return 0, {}
    progress = json.loads((folder / "progress.json").read_text())
    state = torch.load(folder / "state.pt", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    random.setstate(state["python_rng"])
    return int(progress["step"]), progress


def remove_checkpoint(output_dir: Path) -> None:
    shutil.rmtree(Path(output_dir) / CHECKPOINT_DIR, ignore_errors=True)


def epoch_batches(
    make_batches: Callable[[int], list[list[int]]], start_step: int, total_steps: int
) -> Iterator[tuple[int, list[int]]]:
    """(step, batch) pairs from `start_step` on, walking epochs with a fresh order each time.

    make_batches(epoch) must be deterministic, so a resumed run sees exactly the batches the
    killed run would have seen.
    """
    step, epoch = 0, 0
    while step < total_steps:
        for batch in make_batches(epoch):
            if step >= total_steps:
                return
            if step >= start_step:
                yield step, batch
            step += 1
        epoch += 1


def total_optimizer_steps(
    batches_per_epoch: int, epochs: float, max_steps: int | None, grad_accum: int
) -> int:
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(batches_per_epoch * epochs / grad_accum))


def mean_metrics(rows: Sequence[Metrics]) -> Metrics:
    """Per-key mean over the rows that have a number for it (a batch of ties has no accuracy)."""
    means: Metrics = {}
    for key in sorted({key for row in rows for key in row}):
        values = [row[key] for row in rows if key in row and not math.isnan(row[key])]
        if values:
            means[key] = sum(values) / len(values)
    return means


def final_metrics(train: Metrics, evaluation: Metrics) -> Metrics:
    """One flat dict for the artifact: train_loss, eval_accuracy, ..."""
    return {
        **{metric.train_metric(key): value for key, value in train.items()},
        **{metric.eval_metric(key): value for key, value in evaluation.items()},
    }


class Throughput:
    """Samples and tokens per second since the loop started (or resumed)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.samples = 0
        self.tokens = 0

    def add(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def rates(self) -> Metrics:
        seconds = max(self.seconds, 1e-9)
        return {
            metric.SAMPLES_PER_S: self.samples / seconds,
            metric.TOKENS_PER_S: self.tokens / seconds,
        }


# A batch's loss: (prepared model, indices into the training pairs) -> (loss, stats, tokens).
BatchLoss = Callable[[torch.nn.Module, list[int]], tuple[torch.Tensor, Metrics, int]]


def optimize(
    *,
    accelerator: Accelerator,
    model: torch.nn.Module,
    config: Any,
    lengths: Sequence[int],
    batch_loss: BatchLoss,
    evaluate: Callable[[torch.nn.Module], Metrics] | None,
    output_dir: Path,
    callbacks: Callbacks,
) -> tuple[torch.nn.Module, TrainResult]:
    """The optimisation loop both trainers share: AdamW with warmup and decay over
    length-bucketed batches, gradient accumulation and clipping, metrics every optimizer step,
    held-out evaluation, checkpoints, resume and cancellation. Returns the prepared model and
    the result (its output_dir is where the caller saves the artifact)."""
    from training.engine.data import length_bucketed_batches

    if not lengths:
        # Every epoch would be empty and the loop would never reach its step count.
        raise ValueError(
            "Nothing to train on: no pair is left once ties and the evaluation slice are set "
            "aside (judge more pairs, or lower eval_fraction)."
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    # Each process takes every num_processes-th batch, so an epoch is that much shorter.
    batches_per_epoch = -(-len(lengths) // (config.batch_size * accelerator.num_processes))
    total_steps = total_optimizer_steps(
        batches_per_epoch, config.epochs, config.max_steps, config.grad_accum_steps
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: learning_rate_factor(step, total_steps, config.warmup_ratio, config.schedule),
    )
    # The scheduler stays ours: stepped once per optimizer step (accelerate's wrapper would step
    # it once per process).
    model, optimizer = accelerator.prepare(model, optimizer)
    start_step, _ = load_checkpoint(
        output_dir, model=model, optimizer=optimizer, scheduler=scheduler
    )

    def make_batches(epoch: int) -> list[list[int]]:
        batches = length_bucketed_batches(
            lengths, config.batch_size, shuffle=True, seed=config.seed + epoch
        )
        return batches[accelerator.process_index :: accelerator.num_processes]

    model.train()
    throughput = Throughput()
    step_metrics: list[Metrics] = []
    train_metrics: Metrics = {}
    eval_metrics: Metrics = {}
    step = start_step
    accum = config.grad_accum_steps
    for micro_step, batch_index in epoch_batches(
        make_batches, start_step * accum, total_steps * accum
    ):
        if callbacks.should_stop():
            save_checkpoint(
                output_dir, model=model, optimizer=optimizer, scheduler=scheduler, step=step
            )
            raise RunCancelled(f"stopped at step {step} of {total_steps}")
        with accelerator.accumulate(model):
            loss, stats, tokens = batch_loss(model, batch_index)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()  # a no-op between accumulation steps
            optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                scheduler.step()
        throughput.add(len(batch_index), tokens)
        step_metrics.append({metric.LOSS: loss.item(), **stats})
        if (micro_step + 1) % accum:
            continue

        # One optimizer step done.
        step += 1
        train_metrics = {
            **mean_metrics(step_metrics),
            metric.GRAD_NORM: float(grad_norm),
            metric.LEARNING_RATE: float(scheduler.get_last_lr()[0]),
            **throughput.rates(),
        }
        step_metrics = []
        callbacks.on_metrics(step, "train", train_metrics)
        callbacks.on_progress(step, total_steps)
        if evaluate is not None and (step % config.eval_every == 0 or step == total_steps):
            eval_metrics = evaluate(model)
            callbacks.on_metrics(step, "eval", eval_metrics)
        if step % config.checkpoint_every == 0 and step < total_steps:
            save_checkpoint(
                output_dir, model=model, optimizer=optimizer, scheduler=scheduler, step=step
            )
    accelerator.wait_for_everyone()
    return model, TrainResult(
        output_dir=Path(output_dir),
        steps=total_steps,
        seconds=throughput.seconds,
        samples_per_second=throughput.rates()[metric.SAMPLES_PER_S],
        train_metrics=train_metrics,
        eval_metrics=eval_metrics,
        resumed_from_step=start_step,
    )

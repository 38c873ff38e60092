"""The keys of ModelVersion.metrics: written by the runner, read by the dashboard and run_loop.

A trained version keeps its engine's final metrics flat with a split prefix (train_loss,
eval_accuracy, ...), its training time, and what the loop measured after training: a reward
model's accuracy on the held-out prompts' human pairs, a candidate policy's gate figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from training.engine import metric_names as metric

SECONDS = "seconds"
GATE_PREFIX = "gate_"
# A reward version on the held-out prompts' human pairs, which no training ever saw.
REWARD_HELDOUT_ACCURACY = metric.HELDOUT_ACCURACY
REWARD_HELDOUT_PAIRS = metric.HELDOUT_PAIRS
# The engine's own evaluation slice (eval_fraction of the training pairs): a fallback only.
REWARD_EVAL_ACCURACY = metric.EVAL_ACCURACY


def gate_metric(name: str) -> str:
    return GATE_PREFIX + name


def engine_metrics(train: Mapping[str, float], evaluation: Mapping[str, float]) -> dict[str, Any]:
    return {
        **{metric.train_metric(k): v for k, v in train.items()},
        **{metric.eval_metric(k): v for k, v in evaluation.items()},
    }


def reward_accuracy(metrics: Mapping[str, Any]) -> float | None:
    """A reward version's headline accuracy: on held-out human pairs where there were any."""
    for key in (REWARD_HELDOUT_ACCURACY, REWARD_EVAL_ACCURACY):
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None

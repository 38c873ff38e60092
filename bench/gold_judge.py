"""A fixed gold judge for benches that run the loop: a Bradley-Terry reward head fitted on every
decided GPT-4 preference of alpaca_eval's published pairs, over frozen reward-model features.

It stands in for people twice: `GoldJudge.prefer` is the verdict that scores a policy (the side
with the higher gold reward; equal rewards tie), and `GoldJudge.annotators(seed)` is an oracle
for simulated annotators who draw each choice from the gold Bradley-Terry probability
sigmoid(r_first - r_second), as careful but fallible people would.

The features are what a fresh reward model on `backbone` feeds its head (the data-efficiency
bench's light world: all-MiniLM-L6-v2's pooled [CLS], encoded as the reward model encodes),
standardized by the published answers' mean and spread. Cached under var/.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.data_efficiency import HeadInputs, features, fit_head, read_items

PromptValue = str | list[dict[str, str]]
GOLD_BACKBONE = "all-minilm-l6-v2"


@dataclass
class GoldHead:
    theta: torch.Tensor  # (d,) on standardized features
    mean: torch.Tensor
    std: torch.Tensor
    agreement: float  # with GPT-4 on the decided pairs it was fitted on
    decided: int


def fit_gold_head(data: Path, backbone: str = GOLD_BACKBONE) -> GoldHead:
    items = read_items(data)
    prompts = [item.prompt for item in items for _ in item.answers]
    x = features(prompts, [answer for item in items for answer in item.answers], backbone)
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    decided = [i for i, item in enumerate(items) if item.gpt4_prefers_first is not None]
    winners = torch.tensor([2 * i + (0 if items[i].gpt4_prefers_first else 1) for i in decided])
    losers = torch.tensor([2 * i + (1 if items[i].gpt4_prefers_first else 0) for i in decided])
    theta = fit_head(z[winners] - z[losers])
    agreement = float(((z[winners] - z[losers]) @ theta > 0).float().mean())
    return GoldHead(theta, mean, std, agreement, len(decided))


@dataclass
class GoldJudge:
    head: GoldHead
    backbone: str = GOLD_BACKBONE
    name: str = "gold"
    _encoder: HeadInputs | None = field(default=None, repr=False)
    _rewards: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)

    def reward(self, prompt: PromptValue, answer: str) -> float:
        key = (repr(prompt), answer)
        if key not in self._rewards:
            if self._encoder is None:
                self._encoder = HeadInputs(self.backbone)
            x = self._encoder([prompt], [answer])[0]
            self._rewards[key] = float(((x - self.head.mean) / self.head.std) @ self.head.theta)
        return self._rewards[key]

    def p_first(self, prompt: PromptValue, first: str, second: str) -> float:
        gap = self.reward(prompt, first) - self.reward(prompt, second)
        return 1 / (1 + math.exp(-gap))

    def prefer(self, prompt: PromptValue, first: str, second: str) -> float:
        gap = self.reward(prompt, first) - self.reward(prompt, second)
        return 0.5 if gap == 0 else float(gap > 0)

    def annotators(self, seed: int) -> DrawnFromGold:
        return DrawnFromGold(self, random.Random(seed))


@dataclass
class DrawnFromGold:
    """Simulated annotators' oracle: each choice a draw from the gold judge's probability."""

    judge: GoldJudge
    rng: random.Random
    name: str = "gold-drawn"

    def prefer(self, prompt: PromptValue, first: str, second: str) -> float:
        return float(self.rng.random() < self.judge.p_first(prompt, first, second))

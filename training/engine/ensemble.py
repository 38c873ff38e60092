"""Bootstrap heads on a trained reward model's features: a measure of what it does not know.

A reward model's margin says how close two answers look to it, not how sure it is of that: a
pair the people themselves find close looks close however many labels it has seen, so asking
about the closest pairs keeps buying coin flips. Here K linear heads are fitted on the reward
model's own final features (the input of its one-output head), each on a bootstrap resample of
the training pairs (a Poisson(1) weight per pair and head) and each pulled towards its own random
draw from the prior (randomized priors, Osband et al. 2018). Where the labels pinned the reward
down the heads agree; where they are few, noisy or absent (a direction no training pair spans)
the heads keep their spread. The prior is scaled so that, before any label, a typical training
pair's margin has a standard deviation of one logit.

The pair to ask about is the one whose label says most about the heads: BALD's mutual
information, the entropy of the heads' mean prediction minus the mean entropy of each head's
(Houlsby et al. 2011; BAL-PM uses it for preference pairs). A pair every head calls a coin flip
scores near zero; a pair the heads split on scores high.

Pure PyTorch; the heads are saved beside the reward model as `ensemble.safetensors`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ENSEMBLE_FILE = "ensemble.safetensors"


def bootstrap_weights(pairs: int, heads: int, seed: int) -> torch.Tensor:  # (K, N)
    """Poisson(1) counts: each head sees each pair 0, 1, 2... times, as a resample would."""
    generator = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.ones(heads, pairs), generator=generator)


def fit_bootstrap_heads(
    chosen: torch.Tensor,  # (N, H) features of each pair's chosen answer
    rejected: torch.Tensor,  # (N, H) and of its rejected one
    target: torch.Tensor,  # (N,) probability that chosen is better: 1, or 0.5 for a tie
    *,
    heads: int,
    seed: int = 0,
    start: torch.Tensor | None = None,  # (H,) e.g. the trained head: where the fit begins
    prior_logit_std: float = 1.0,
    steps: int = 100,
) -> torch.Tensor:  # (K, H)
    """K Bradley-Terry heads, each the minimum of its resample's loss plus a Gaussian pull
    towards its own prior draw; see the module docstring."""
    difference = (chosen - rejected).float()  # (N, H): a linear head's margin is w . difference
    count, width = difference.shape
    generator = torch.Generator().manual_seed(seed)
    weights = bootstrap_weights(count, heads, seed)  # (K, N)
    typical = difference.pow(2).sum(dim=1).mean().clamp(min=1e-8) if count else torch.tensor(1.0)
    precision = float(typical) / prior_logit_std**2  # prior N(0, I / precision) on each head
    anchors = torch.randn(heads, width, generator=generator) / precision**0.5  # (K, H)
    begin = anchors if start is None else start.float().reshape(1, -1).repeat(heads, 1)
    fitted = begin.clone().requires_grad_(True)  # (K, H)
    optimizer = torch.optim.LBFGS([fitted], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        margins = fitted @ difference.T  # (K, N)
        # BCE with a soft target: -(t log s(m) + (1 - t) log s(-m)); ties train towards 0.
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            margins, target.float().expand_as(margins), weight=weights, reduction="sum"
        )
        pull = 0.5 * precision * ((fitted - anchors) ** 2).sum()
        loss: torch.Tensor = (nll + pull) / max(count, 1)  # independent heads: one sum, one solve
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return fitted.detach()


def head_scores(features: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:  # (N, K)
    """Each head's reward of each answer (up to the bias, which no margin sees)."""
    return features.float() @ heads.float().T


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def expected_information(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:  # (N,)
    """BALD in bits for pairs of answers given each head's scores (N, K) of both."""
    p = torch.sigmoid(first.float() - second.float())  # (N, K): each head's P(first better)
    return (_entropy_bits(p.mean(dim=1)) - _entropy_bits(p).mean(dim=1)).clamp(min=0)


def margin_spread(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:  # (N,)
    """The heads' standard deviation of the margin: the doubt in reward units."""
    margins = first.float() - second.float()
    return margins.std(dim=1) if margins.shape[1] > 1 else torch.zeros(margins.shape[0])


def save_heads(folder: Path, heads: torch.Tensor) -> None:
    save_file({"heads": heads.contiguous().float()}, str(Path(folder) / ENSEMBLE_FILE))


def load_heads(folder: Path) -> torch.Tensor | None:
    """(K, H), or None where the reward model was trained without an ensemble."""
    path = Path(folder) / ENSEMBLE_FILE
    return load_file(str(path))["heads"] if path.exists() else None

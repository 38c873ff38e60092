"""What a trained reward model does not know, measured on its own features: bootstrap heads,
and the Laplace posterior of its head.

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

The Laplace posterior (`HeadPosterior`) is the same doubt in closed form: a Gaussian over the
head, centred at the trained one, whose covariance covers every direction of the features where
K heads sample K of them. A pair's margin is then Gaussian and BALD has a closed form
(`pair_information`). A round's pairs are chosen one at a time, each the
label that would most reduce the doubt about the other candidates' margins given the ones
before it (`informative_order`), which keeps a round from asking the same thing twice and from
chasing outlying answers.

Pure PyTorch; the heads are saved beside the reward model as `ensemble.safetensors`, the
posterior as `posterior.safetensors`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
    precision = prior_precision(difference, prior_logit_std)  # prior N(0, I / precision)
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


def prior_precision(difference: torch.Tensor, prior_logit_std: float) -> float:
    """The Gaussian prior's precision on a head such that, before any label, a typical pair's
    margin (w . difference) has a standard deviation of `prior_logit_std` logits."""
    count = difference.shape[0]
    typical = difference.pow(2).sum(dim=1).mean().clamp(min=1e-8) if count else torch.tensor(1.0)
    return float(typical) / prior_logit_std**2


def laplace_posterior(
    chosen: torch.Tensor,  # (N, H) features of each pair's chosen answer
    rejected: torch.Tensor,  # (N, H) and of its rejected one
    target: torch.Tensor,  # (N,) probability that chosen is better: 1, or 0.5 for a tie
    *,
    at: torch.Tensor | None = None,  # (H,) the trained head; None: the prior's mode is fitted
    prior_logit_std: float = 1.0,
    steps: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:  # (H,) the centre, (H, H) a factor of the covariance
    """The head's posterior under the Bradley-Terry likelihood and a N(0, I / precision) prior,
    approximated by a Gaussian (Laplace): the covariance is the inverse of the negative log
    posterior's Hessian, sum_i p_i (1 - p_i) d_i d_i^T + precision I. It is the whole doubt of
    a linear head, every direction at once, where K heads sample K of them. Centred `at` the
    trained head where one is given, so its margins are the reward model's own; otherwise at
    the mode of likelihood times prior."""
    difference = (chosen - rejected).float()  # (N, H)
    width = difference.shape[1]
    precision = prior_precision(difference, prior_logit_std)
    if at is not None:
        centre = at.float().reshape(-1)
    else:
        centre = _posterior_mode(difference, target.float(), precision, steps)
    p = torch.sigmoid(difference @ centre)  # (N,)
    hessian = (difference * (p * (1 - p))[:, None]).T @ difference  # (H, H)
    hessian += precision * torch.eye(width)
    # With hessian = C C^T, the covariance is C^-T C^-1: C^-T is its factor, one solve away.
    lower = torch.linalg.cholesky(hessian.double())
    inverse = torch.linalg.solve_triangular(lower, torch.eye(width).double(), upper=False)
    return centre, inverse.T.float()


def _posterior_mode(
    difference: torch.Tensor, target: torch.Tensor, precision: float, steps: int
) -> torch.Tensor:  # (H,)
    """argmin of the Bradley-Terry loss plus the prior's 0.5 precision |w|^2."""
    mode = torch.zeros(difference.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([mode], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            difference @ mode, target, reduction="sum"
        )
        loss: torch.Tensor = (nll + 0.5 * precision * mode.pow(2).sum()) / max(len(target), 1)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    if len(target):
        optimizer.step(closure)  # type: ignore[no-untyped-call]
    return mode.detach()


@dataclass(frozen=True)
class HeadPosterior:
    """A reward head's Laplace posterior: its centre and a factor of its covariance (L L^T)."""

    mode: torch.Tensor  # (H,) the centre: the trained head, or the posterior's mode
    factor: torch.Tensor  # (H, H) triangular

    @classmethod
    def fit(
        cls,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
        target: torch.Tensor,
        *,
        at: torch.Tensor | None = None,
        prior_logit_std: float = 1.0,
    ) -> HeadPosterior:
        mode, factor = laplace_posterior(
            chosen, rejected, target, at=at, prior_logit_std=prior_logit_std
        )
        return cls(mode, factor)

    def answers(self, features: torch.Tensor) -> AnswerPosterior:  # features (N, H)
        """What pair selection needs of each answer: its reward under the centre and its
        features whitened by the covariance, so that a pair's margin variance is the squared
        distance of its two answers' whitened features."""
        features = features.float()
        return AnswerPosterior(mean=features @ self.mode, whitened=features @ self.factor)


@dataclass(frozen=True)
class AnswerPosterior:
    """Answers under a head's posterior: a pair (a, b) has margin mean[a] - mean[b] with
    variance |whitened[a] - whitened[b]|^2."""

    mean: torch.Tensor  # (N,)
    whitened: torch.Tensor  # (N, H)


# sigmoid(z) is close to Phi(z sqrt(pi / 8)); the binary entropy in bits of Phi(x) is close to
# exp(-x^2 / (pi ln 2)) (Houlsby et al. 2011), whose Gaussian expectation has a closed form.
_PROBIT = math.pi / 8
_ENTROPY_WIDTH = math.pi * math.log(2) / 2


def pair_information(margin: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:  # (N,)
    """BALD in bits for pairs whose Bradley-Terry margin is Gaussian (mean `margin`, variance
    `variance`): the entropy of the predicted vote minus the expected entropy under each
    head the posterior allows. Near zero where the head is sure of the margin (even a coin
    flip), high where the margin's sign is in doubt because of the head, not the people."""
    mean, spread = margin.float() * math.sqrt(_PROBIT), variance.float().clamp(min=0) * _PROBIT
    predicted = torch.special.ndtr(mean / torch.sqrt(1 + spread)).clamp(1e-7, 1 - 1e-7)
    expected_entropy = (
        math.sqrt(_ENTROPY_WIDTH)
        / torch.sqrt(spread + _ENTROPY_WIDTH)
        * torch.exp(-mean.pow(2) / (2 * (spread + _ENTROPY_WIDTH)))
    )
    return (_entropy_bits(predicted) - expected_entropy).clamp(min=0)


def vote_weight(margin: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """p (1 - p) of the predicted vote: the Fisher information one label carries about the
    margin, highest for a pair still undecided."""
    p = torch.sigmoid(margin / torch.sqrt(1 + _PROBIT * variance.clamp(min=0)))
    return (p * (1 - p)).clamp(min=1e-6)


@dataclass(frozen=True)
class Pick:
    index: int  # into the candidates
    value: float  # the weighted doubt its label would remove from the targets' margins
    information: float  # BALD in bits of its own label, given the picks before it


def informative_order(
    answers: AnswerPosterior,
    pairs: torch.Tensor,  # (C, 2) candidate pairs: row indices into `answers`
    groups: Sequence[int],  # (C,) a candidate's group (its prompt): one pick a group
    count: int,
    *,
    targets: int = 512,
    seed: int = 0,
) -> list[Pick]:
    """Up to `count` candidates, greedily, each the one whose label would most reduce the doubt
    about the margins of the candidates themselves (up to `targets` of them drawn as a sample),
    each target weighted by how undecided it is (vote_weight), given the labels of those picked
    before it. A Gaussian stand-in for expected predictive information gain (EPIG, Bickford
    Smith et al. 2023): plain BALD (pair_information) goes for the pairs of outlying answers,
    whose margins are the least known and the least like any other pair, so their labels
    teach little about the rest. After each pick the covariance shrinks as that label would
    shrink it (a rank-one update with its vote's Fisher weight), so a second pair that would
    teach the same thing is worth less."""
    if count <= 0 or len(pairs) == 0:
        return []
    margin = answers.mean[pairs[:, 0]] - answers.mean[pairs[:, 1]]  # (C,)
    whitened = answers.whitened[pairs[:, 0]] - answers.whitened[pairs[:, 1]]  # (C, H)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(len(pairs), generator=generator)[:targets]  # (T,)
    metric = torch.eye(whitened.shape[1])  # the covariance, in whitened coordinates
    variance = whitened.pow(2).sum(dim=1)  # (C,)
    cross = whitened[sample] @ whitened.T  # (T, C): each target's covariance with each candidate
    group_of = torch.tensor(list(groups))
    open_ = torch.ones(len(pairs), dtype=torch.bool)
    picked: list[Pick] = []
    while len(picked) < count and bool(open_.any()):
        weight = vote_weight(margin, variance)  # (C,)
        removed = (weight[sample, None] * cross.pow(2)).sum(dim=0) / (1 / weight + variance)
        best = int(torch.where(open_, removed, -1.0).argmax())
        information = pair_information(margin[best, None], variance[best, None])
        picked.append(Pick(best, float(removed[best]), float(information[0])))
        open_ &= group_of != group_of[best]
        towards = metric @ whitened[best]  # (H,)
        denominator = 1 / float(weight[best]) + float(variance[best])
        shared = whitened @ towards  # (C,): each candidate's covariance with `best`
        cross -= torch.outer(shared[sample], shared) / denominator
        variance = (variance - shared.pow(2) / denominator).clamp(min=0)
        metric -= torch.outer(towards, towards) / denominator
    return picked


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


POSTERIOR_FILE = "posterior.safetensors"


def save_posterior(folder: Path, posterior: HeadPosterior) -> None:
    save_file(
        {"mode": posterior.mode.contiguous().float(), "factor": posterior.factor.contiguous()},
        str(Path(folder) / POSTERIOR_FILE),
    )


def load_posterior(folder: Path) -> HeadPosterior | None:
    """The head's posterior, or None where the reward model was trained without one."""
    path = Path(folder) / POSTERIOR_FILE
    if not path.exists():
        return None
    tensors = load_file(str(path))
    return HeadPosterior(mode=tensors["mode"], factor=tensors["factor"])


def save_heads(folder: Path, heads: torch.Tensor) -> None:
    save_file({"heads": heads.contiguous().float()}, str(Path(folder) / ENSEMBLE_FILE))


def load_heads(folder: Path) -> torch.Tensor | None:
    """(K, H), or None where the reward model was trained without an ensemble."""
    path = Path(folder) / ENSEMBLE_FILE
    return load_file(str(path))["heads"] if path.exists() else None

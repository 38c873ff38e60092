"""Annotator reliability from the judgments themselves: a two-way Dawid-Skene model.

Each pair has a hidden better side (a or b, prior one half each); each annotator has one
reliability r, the chance that their vote names the better side, whichever it is ("one coin").
EM alternates: the posterior of every pair from the votes on it, weighted by their voters'
log-odds log(r / (1 - r)); then every annotator's reliability from how often they agree with
those posteriors. Gold pairs are anchored at their known side. A Beta prior (a few pseudo-votes
at `PRIOR_RELIABILITY`) keeps a newcomer with three votes from looking perfect or hopeless.

Only decided votes (a or b) enter: a tie or "both bad" says nothing about which side is better.
Pure Python, no Django: `annotate.selectors` feeds it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PRIOR_RELIABILITY = 0.7  # a typical careful annotator on preference data
PRIOR_VOTES = 4.0  # how many votes' worth that prior weighs
FLAG_BELOW = 0.4  # far below chance (0.5): careless, adversarial, or the sides swapped
FLAG_MIN_VOTES = 10  # fewer votes say too little to accuse anyone
_CLIP = 1e-3


@dataclass(frozen=True)
class Vote:
    pair: int
    annotator: int
    says_a: bool  # the vote names answer a as the better one


@dataclass(frozen=True)
class CrowdFit:
    reliability: dict[int, float]  # per annotator: P(their vote names the better side)
    votes: dict[int, int]  # decided votes per annotator
    posterior_a: dict[int, float]  # per pair: P(answer a is the better one | every vote)
    iterations: int

    def flagged(self, annotator: int, below: float = FLAG_BELOW) -> bool:
        """Reliability under `below` (far below chance by default) on enough votes to say so."""
        return self.votes.get(annotator, 0) >= FLAG_MIN_VOTES and (
            self.reliability.get(annotator, 1.0) < below
        )


# Two answers of a ranking item: (item id, the lower response id, the higher one).
RankedKey = tuple[int, int, int]


@dataclass(frozen=True)
class CrowdLabels:
    """The crowd model's say on every pair it saw, as the resolvers read it."""

    comparisons: dict[int, float]  # pairwise comparison id -> P(answer a is the better one)
    ranked: dict[RankedKey, float]  # two answers of a ranking item -> P(the lower id's is)


def _log_odds(probability: float) -> float:
    probability = min(max(probability, _CLIP), 1 - _CLIP)
    return math.log(probability / (1 - probability))


def crowd_fit(
    votes: Iterable[Vote],
    gold_a: Mapping[int, bool] | None = None,
    *,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
) -> CrowdFit:
    """Fit reliabilities and pair posteriors; gold_a maps a gold pair to "a is better"."""
    gold_a = gold_a or {}
    votes = list(votes)
    by_pair: dict[int, list[Vote]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    for vote in votes:
        by_pair[vote.pair].append(vote)
        counts[vote.annotator] += 1
    alpha = PRIOR_VOTES * PRIOR_RELIABILITY  # pseudo-votes for and against the better side
    beta = PRIOR_VOTES * (1 - PRIOR_RELIABILITY)

    # Start from the majority: the share of each pair's votes for a (gold pairs known).
    posterior = {
        pair: float(gold_a[pair]) if pair in gold_a else sum(v.says_a for v in on) / len(on)
        for pair, on in by_pair.items()
    }
    reliability: dict[int, float] = {}
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        agreed: dict[int, float] = defaultdict(float)
        for vote in votes:
            p_a = posterior[vote.pair]
            agreed[vote.annotator] += p_a if vote.says_a else 1 - p_a
        reliability = {
            annotator: (agreed[annotator] + alpha) / (count + alpha + beta)
            for annotator, count in counts.items()
        }
        weight = {annotator: _log_odds(r) for annotator, r in reliability.items()}
        change = 0.0
        for pair, on in by_pair.items():
            if pair in gold_a:
                continue
            logit = sum(weight[v.annotator] if v.says_a else -weight[v.annotator] for v in on)
            updated = 1 / (1 + math.exp(-max(min(logit, 50.0), -50.0)))
            change = max(change, abs(updated - posterior[pair]))
            posterior[pair] = updated
        if change < tolerance:
            break
    return CrowdFit(
        reliability=reliability,
        votes=dict(counts),
        posterior_a=posterior,
        iterations=iterations,
    )

"""Data quality: how a pair's judgments resolve, and how much annotators agree.

Pure functions over outcomes (a / b / tie / both_bad), so they are easy to test by hand; the
selectors feed them from the database.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

OUTCOMES = ("a", "b", "tie", "both_bad")
DISAGREEMENT = "disagreement"


@dataclass(frozen=True)
class Resolution:
    """A pair's derived label. Ties and disagreements stay visible; nothing is copied."""

    label: str  # a, b, tie, both_bad, or disagreement (no strict majority)
    agreement: float  # share of judgments that voted for the label (0 when disagreement)
    counts: dict[str, int]
    judgments: int


def resolve(outcomes: Sequence[str]) -> Resolution:
    counts = Counter(outcomes)
    total = len(outcomes)
    if total == 0:
        return Resolution(DISAGREEMENT, 0.0, {}, 0)
    (top, top_count), *rest = counts.most_common()
    if rest and rest[0][1] == top_count:
        return Resolution(DISAGREEMENT, 0.0, dict(counts), total)
    if top_count * 2 <= total and total > 1:
        # A plurality without a majority is not an answer we train on.
        return Resolution(DISAGREEMENT, 0.0, dict(counts), total)
    return Resolution(top, top_count / total, dict(counts), total)


def percent_agreement(units: Iterable[Sequence[str]]) -> float | None:
    """Share of agreeing pairs of judgments within each unit, over every unit with >= 2."""
    agreeing = pairs = 0
    for outcomes in units:
        counts = Counter(outcomes)
        n = len(outcomes)
        if n < 2:
            continue
        pairs += n * (n - 1)
        agreeing += sum(c * (c - 1) for c in counts.values())
    return agreeing / pairs if pairs else None


def krippendorff_alpha_nominal(units: Iterable[Sequence[str]]) -> float | None:
    """Krippendorff's alpha for nominal labels: 1 - observed / expected disagreement.

    Units with fewer than two judgments carry no pairable information and are left out.
    None when it is undefined (fewer than two pairable values, or a single label everywhere).
    """
    coincidence: defaultdict[tuple[str, str], float] = defaultdict(float)
    for outcomes in units:
        n = len(outcomes)
        if n < 2:
            continue
        counts = Counter(outcomes)
        for c in counts:
            for k in counts:
                same = counts[c] * (counts[k] - (1 if c == k else 0))
                coincidence[(c, k)] += same / (n - 1)
    total = sum(coincidence.values())
    if total <= 1:
        return None
    marginals: defaultdict[str, float] = defaultdict(float)
    for (c, _k), value in coincidence.items():
        marginals[c] += value
    observed = sum(value for (c, k), value in coincidence.items() if c != k) / total
    expected = sum(marginals[c] * marginals[k] for c in marginals for k in marginals if c != k) / (
        total * (total - 1)
    )
    if expected == 0:
        return None
    return 1 - observed / expected


@dataclass(frozen=True)
class AnnotatorStats:
    annotator_id: int
    username: str
    judgments: int
    gold_judged: int
    gold_accuracy: float | None
    agreement_with_others: float | None
    left_bias: float | None  # share of decided choices that went to the left side
    median_seconds: float | None


def annotator_stats(
    annotator_id: int,
    username: str,
    rows: Sequence[dict],
) -> AnnotatorStats:
    """rows: this annotator's judgments as dicts with outcome, choice, gold, others (the other
    annotators' outcomes on the same pair) and time_spent_ms."""
    gold = [row for row in rows if row["gold"] is not None]
    gold_correct = sum(1 for row in gold if row["outcome"] == row["gold"])
    comparisons = [(row["outcome"], other) for row in rows for other in row["others"]]
    decided = [row["choice"] for row in rows if row["choice"] in ("left", "right")]
    times = [row["time_spent_ms"] / 1000 for row in rows if row["time_spent_ms"] is not None]
    return AnnotatorStats(
        annotator_id=annotator_id,
        username=username,
        judgments=len(rows),
        gold_judged=len(gold),
        gold_accuracy=gold_correct / len(gold) if gold else None,
        agreement_with_others=(
            sum(1 for mine, theirs in comparisons if mine == theirs) / len(comparisons)
            if comparisons
            else None
        ),
        left_bias=decided.count("left") / len(decided) if decided else None,
        median_seconds=statistics.median(times) if times else None,
    )


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def wilson_interval(share: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share observed over `count` trials (95% by default)."""
    if count <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / count
    centre = (share + z * z / (2 * count)) / denominator
    half = z * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)

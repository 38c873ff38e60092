"""The crowd model recovers who is reliable from the votes alone, and the API reports it."""

from __future__ import annotations

import random

import pytest

from annotate.crowd import Vote, crowd_fit
from annotate.models import Comparison
from tests.annotate.test_judging import annotators, make_round
from tests.annotate.test_quality import judge


def _simulated_votes(reliabilities: dict[int, float], pairs: int, seed: int = 7):
    """Every annotator votes on every pair; the truth is a random side per pair."""
    rng = random.Random(seed)
    truth = {pair: rng.random() < 0.5 for pair in range(pairs)}
    votes = [
        Vote(pair, annotator, truth[pair] if rng.random() < r else not truth[pair])
        for pair in range(pairs)
        for annotator, r in reliabilities.items()
    ]
    return votes, truth


def test_reliabilities_are_recovered_and_beat_the_majority_on_labels():
    # Three careful, two random, one adversarial: a majority of five is wrong often.
    reliabilities = {1: 0.9, 2: 0.85, 3: 0.8, 4: 0.5, 5: 0.5, 6: 0.1}
    votes, truth = _simulated_votes(reliabilities, pairs=300)
    fit = crowd_fit(votes)
    for annotator, r in reliabilities.items():
        assert fit.reliability[annotator] == pytest.approx(r, abs=0.07)
    assert fit.flagged(6) and not any(fit.flagged(a) for a in (1, 2, 3, 4, 5))

    crowd_right = sum((fit.posterior_a[p] > 0.5) == truth[p] for p in truth)
    majority_right = sum(
        (sum(v.says_a for v in votes if v.pair == p) > 3) == truth[p] for p in truth
    )
    assert crowd_right > majority_right


def test_gold_pairs_anchor_the_sides_and_a_newcomer_is_not_judged_on_three_votes():
    # Two annotators who always disagree: without gold the model cannot tell who is right.
    votes = [Vote(p, 1, True) for p in range(20)] + [Vote(p, 2, False) for p in range(20)]
    votes += [Vote(p, 3, False) for p in range(3)]  # a newcomer with three votes
    fit = crowd_fit(votes, gold_a={0: True, 1: True, 2: True})
    assert fit.reliability[1] > 0.8 > 0.2 > fit.reliability[2]
    assert fit.posterior_a[0] == 1.0 and fit.posterior_a[10] > 0.9
    assert 0.15 < fit.reliability[3] < 0.7 and not fit.flagged(3)  # the prior holds them up
    assert fit.flagged(2)


@pytest.mark.django_db
def test_the_statistics_api_reports_reliability_and_flags_and_ties_are_not_votes(
    project, admin_api
):
    make_round(project, prompts=12, required=3)
    careful, contrary, undecided = annotators(project, 3)
    judge(project, careful, lambda lease: "left" if lease.a_on_left else "right")  # always a
    judge(project, contrary, lambda lease: "right" if lease.a_on_left else "left")  # always b
    judge(project, undecided, lambda lease: "tie")
    Comparison.objects.filter(pk__in=Comparison.objects.order_by("pk")[:4]).update(gold_outcome="a")
    body = admin_api.get(f"/api/projects/{project.pk}/statistics/").json()
    rows = {row["username"]: row for row in body["annotators"]}
    assert rows[careful.username]["reliability"] > 0.8 and not rows[careful.username]["flagged"]
    assert rows[contrary.username]["reliability"] < 0.2 and rows[contrary.username]["flagged"]
    assert rows[undecided.username]["reliability"] is None
    assert rows[undecided.username]["decided_votes"] == 0

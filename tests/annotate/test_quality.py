"""Agreement and annotator quality, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from annotate.models import Comparison, Membership
from annotate.quality import krippendorff_alpha_nominal, percent_agreement, resolve
from annotate.services import (
    annotators_pause_below_gold,
    assignment_lease_next,
    judgment_submit,
)
from tests.annotate.test_judging import annotators, make_round


def test_resolution_keeps_ties_and_disagreements_visible():
    assert resolve(["a", "a", "b"]).label == "a"
    assert resolve(["a", "a", "b"]).agreement == pytest.approx(2 / 3)
    assert resolve(["a", "b"]).label == "disagreement"
    assert resolve(["tie", "tie", "a"]).label == "tie"
    assert resolve(["a", "b", "tie"]).label == "disagreement"
    assert resolve(["both_bad"]).label == "both_bad"


def test_percent_agreement_by_hand():
    # Unit 1: [a, a] -> 2 agreeing ordered pairs of 2. Unit 2: [a, b] -> 0 of 2. Unit 3 (1 vote)
    # is unpairable. 2 / 4 = 0.5.
    assert percent_agreement([["a", "a"], ["a", "b"], ["a"]]) == pytest.approx(0.5)
    assert percent_agreement([["a"]]) is None


def test_krippendorff_alpha_by_hand():
    # Coincidences: o(a,a)=2 from unit 1; o(a,b)=o(b,a)=1 from unit 2. n=4, n_a=3, n_b=1.
    # alpha = 1 - (n-1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k = 1 - 3 * 2 / 6 = 0.
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "b"]]) == pytest.approx(0.0)
    # Perfect agreement with more than one label in use.
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    # Three coders, units [a,a,a], [a,a,b], [b,b,b]:
    # unit 2 gives o(a,a) = 2*1/2 = 1, o(a,b) = o(b,a) = 2*1/2 = 1; units 1 and 3 give o(a,a)=3,
    # o(b,b)=3. n_a = 3+1+1 = 5, n_b = 3+1 = 4, n = 9.
    # alpha = 1 - 8 * 2 / (2 * 5 * 4) = 1 - 16/40 = 0.6
    units = [["a", "a", "a"], ["a", "a", "b"], ["b", "b", "b"]]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.6)
    assert krippendorff_alpha_nominal([["a", "a"]]) is None  # one label: undefined


def judge(project, annotator, choose) -> None:
    while (lease := assignment_lease_next(project=project, annotator=annotator)) is not None:
        judgment_submit(
            assignment_id=lease.pk,
            annotator=annotator,
            choice=choose(lease),
            time_spent_ms=3000,
        )


@pytest.mark.django_db
def test_statistics_api_reports_agreement_bias_and_gold(project, admin_api, annotator_api):
    make_round(project, prompts=6, required=2)
    Comparison.objects.update(gold_outcome="a")
    careful, sloppy = annotators(project, 2)
    judge(project, careful, lambda lease: "left" if lease.a_on_left else "right")  # always a
    judge(project, sloppy, lambda lease: "left")  # always left: half right, all left-biased

    body = admin_api.get(f"/api/projects/{project.pk}/statistics/").json()
    rows = {row["username"]: row for row in body["annotators"]}
    assert rows[careful.username]["gold_accuracy"] == 1.0
    assert rows[sloppy.username]["left_bias"] == 1.0
    assert rows[careful.username]["median_seconds"] == 3.0
    assert body["judgments"] == 12 and body["comparisons_judged"] == 6
    sloppy_right = rows[sloppy.username]["gold_accuracy"]
    assert body["percent_agreement"] == pytest.approx(sloppy_right)
    assert annotator_api.get(f"/api/projects/{project.pk}/statistics/").status_code == 403


@pytest.mark.django_db
def test_annotators_below_gold_threshold_are_paused_and_served_nothing(project):
    make_round(project, prompts=6, required=2)
    Comparison.objects.update(gold_outcome="a")
    good, bad = annotators(project, 2)
    judge(project, good, lambda lease: "left" if lease.a_on_left else "right")
    judge(project, bad, lambda lease: "right" if lease.a_on_left else "left")  # always wrong
    paused = annotators_pause_below_gold(project=project, min_accuracy=0.7, min_gold_judged=5)
    assert paused == [bad.pk]
    assert Membership.objects.get(user=bad).paused
    assert not Membership.objects.get(user=good).paused


@pytest.mark.django_db
def test_admin_pauses_through_the_api(project, admin_api, annotator, annotator_api):
    make_round(project, prompts=2)
    url = f"/api/projects/{project.pk}/annotators/{annotator.pk}/pause/"
    assert admin_api.post(url, {"paused": True}, format="json").json() == {"paused": True}
    response = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/")
    assert response.status_code == 403 and response.json()["error"] == "paused"
    assert annotator_api.post(url, {"paused": False}, format="json").status_code == 403

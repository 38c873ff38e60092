"""An annotator's own history (gold accuracy with its interval) and an admin's view of one pair."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from annotate.models import Comparison, FeedbackKind
from annotate.quality import wilson_interval
from annotate.services import assignment_lease_next, judgment_submit
from tests.annotate.test_judging import annotators, make_round
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def judge_all(project, annotator, choose, rationale: str = "") -> None:
    while (lease := assignment_lease_next(project=project, annotator=annotator)) is not None:
        judgment_submit(
            assignment_id=lease.pk,
            annotator=annotator,
            choice=choose(lease),
            time_spent_ms=2000,
            rationale=rationale,
        )


def always_a(lease) -> str:
    return "left" if lease.a_on_left else "right"


def always_b(lease) -> str:
    return "right" if lease.a_on_left else "left"


def test_an_annotator_sees_their_gold_accuracy_with_its_interval_and_each_judgment(project):
    make_round(project, prompts=5, required=2)
    gold = list(Comparison.objects.filter(project=project).order_by("id")[:4])
    Comparison.objects.filter(pk__in=[c.pk for c in gold]).update(gold_outcome="a")
    careful, contrary = annotators(project, 2)
    judge_all(project, careful, always_a)
    judge_all(project, contrary, always_b)

    body = client_for(contrary).get(f"/api/projects/{project.pk}/my-history/").json()
    assert (body["judgments"], body["gold_judged"], body["gold_correct"]) == (5, 4, 0)
    assert body["gold_accuracy"] == 0.0
    low, high = wilson_interval(0.0, 4)
    assert (body["gold_low"], body["gold_high"]) == (pytest.approx(low), pytest.approx(high))
    assert body["rounds"] == [{"round": 1, "judgments": 5}]
    assert body["agreement_with_others"] == 0.0
    latest = body["latest"]
    assert [row["id"] for row in latest] == sorted((row["id"] for row in latest), reverse=True)
    assert {row["gold"] for row in latest} == {"wrong", None}
    assert all(row["agrees_with_others"] is False for row in latest)
    assert all(row["other_judgments"] == 1 for row in latest)

    mine = client_for(careful).get(f"/api/projects/{project.pk}/my-history/").json()
    assert (mine["gold_correct"], mine["gold_accuracy"]) == (4, 1.0)


def test_history_shows_only_the_annotators_own_judgments_and_needs_membership(project):
    make_round(project, prompts=3, required=2)
    first, second = annotators(project, 2)
    judge_all(project, first, always_a)
    body = client_for(second).get(f"/api/projects/{project.pk}/my-history/").json()
    assert body["judgments"] == 0 and body["latest"] == [] and body["gold_accuracy"] is None
    assert (body["written_answers"], body["ratings"], body["rankings"]) == (0, 0, 0)
    outsider = UserFactory()
    response = client_for(outsider).get(f"/api/projects/{project.pk}/my-history/")
    assert response.status_code in (403, 404)
    assert "error" in response.json()


def test_an_admin_reviews_one_pair_with_every_judgment_and_rationale(project, admin_api):
    make_round(project, prompts=1, required=2)
    first, second = annotators(project, 2)
    judge_all(project, first, always_a, rationale="a answers the question")
    judge_all(project, second, always_b, rationale="<b>b</b> is shorter")
    comparison = Comparison.objects.get(project=project)

    response = admin_api.get(f"/api/projects/{project.pk}/comparisons/{comparison.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert [answer["side"] for answer in body["answers"]] == ["a", "b"]
    assert body["answers"][0]["text"] == comparison.response_a.text
    by_user = {row["username"]: row for row in body["judgments"]}
    assert by_user[first.username]["outcome"] == "a"
    assert by_user[second.username]["outcome"] == "b"
    assert by_user[second.username]["rationale"] == "<b>b</b> is shorter"  # stored as written
    assert body["resolution"]["label"] == "disagreement"
    assert body["resolution"]["counts"] == {"a": 1, "b": 1}
    assert body["round"] == 1 and body["status"] == "complete"


def test_pair_review_is_for_managers_and_an_unknown_pair_is_a_404(project, admin_api, annotator):
    make_round(project, prompts=1)
    comparison = Comparison.objects.get(project=project)
    url = f"/api/projects/{project.pk}/comparisons/{comparison.pk}/"
    assert client_for(annotator).get(url).status_code == 403
    missing = admin_api.get(f"/api/projects/{project.pk}/comparisons/999999/")
    assert missing.status_code == 404 and "error" in missing.json()


def test_the_review_of_a_rating_item_gives_each_answers_score_in_a_b_terms(project, admin_api):
    make_round(project, prompts=1)
    comparison = Comparison.objects.get(project=project)
    comparison.kind = FeedbackKind.RATING
    comparison.save()
    (rater,) = annotators(project, 1)
    lease = assignment_lease_next(project=project, annotator=rater)
    client_for(rater).post(
        f"/api/assignments/{lease.pk}/submit/",
        {"kind": "rating", "left_score": 7, "right_score": 1},
        format="json",
    )
    body = admin_api.get(f"/api/projects/{project.pk}/comparisons/{comparison.pk}/").json()
    assert body["kind"] == "rating" and body["judgments"] == []
    (rating,) = body["ratings"]
    expected = (7, 1) if lease.a_on_left else (1, 7)
    assert (rating["score_a"], rating["score_b"]) == expected

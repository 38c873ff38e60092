"""The judging API: blind pairs, clean 4xx bodies, annotators see only their own judgments."""

from __future__ import annotations

import json
import uuid

import pytest
from rest_framework.renderers import JSONRenderer

from annotate.models import Judgment, Membership
from annotate.serializers import JudgmentOutputSerializer
from tests.annotate.test_judging import annotators, make_round

pytestmark = pytest.mark.django_db


def test_next_pair_is_blind(project, annotator_api):
    make_round(project, prompts=1)
    body = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    # `kind` names the feedback type (which workspace component shows it), not a model.
    assert set(body) == {"assignment_id", "project_id", "kind", "prompt", "left", "right",
                         "leased_at", "expires_at"}  # fmt: skip
    assert body["kind"] == "pairwise"
    assert set(body["left"]) == {"text"}
    flat = str(body)
    assert "model_version" not in flat and "gold" not in flat


def test_empty_queue_answers_204(project, annotator_api):
    assert annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").status_code == 204


def test_submit_then_retry_through_the_api(project, annotator_api):
    make_round(project, prompts=1)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    body = {"choice": "right", "strength": "strong", "time_spent_ms": 4200,
            "submission_key": str(uuid.uuid4())}  # fmt: skip
    url = f"/api/assignments/{lease['assignment_id']}/submit/"
    first = annotator_api.post(url, body, format="json")
    retry = annotator_api.post(url, body, format="json")
    assert (first.status_code, retry.status_code) == (201, 200)
    assert first.json()["id"] == retry.json()["id"]
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"choice": "middle"}, "choice"),
        ({"choice": "left", "strength": "huge"}, "strength"),
        ({"choice": "left", "time_spent_ms": -5}, "time_spent_ms"),
        ({}, "choice"),
    ],
)
def test_bad_submit_is_a_400_naming_the_field(project, annotator_api, body, field):
    make_round(project, prompts=1)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    response = annotator_api.post(
        f"/api/assignments/{lease['assignment_id']}/submit/", body, format="json"
    )
    assert response.status_code == 400
    assert field in response.json()["detail"]
    assert not Judgment.objects.exists()


def test_strength_on_a_tie_is_refused(project, annotator_api):
    make_round(project, prompts=1)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    response = annotator_api.post(
        f"/api/assignments/{lease['assignment_id']}/submit/",
        {"choice": "tie", "strength": "strong"},
        format="json",
    )
    assert response.status_code == 400
    assert "strength applies only" in response.json()["detail"]


def test_someone_elses_assignment_is_404(project, annotator_api, api_client_user):
    make_round(project, prompts=1)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    from rest_framework.test import APIClient

    intruder = APIClient()
    (other,) = annotators(project, 1)
    intruder.force_authenticate(other)
    response = intruder.post(
        f"/api/assignments/{lease['assignment_id']}/submit/", {"choice": "left"}, format="json"
    )
    assert response.status_code == 404


def test_other_project_annotator_cannot_lease(project, other_annotator_api):
    make_round(project, prompts=1)
    response = other_annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/")
    assert response.status_code == 404


def test_annotators_see_only_their_own_judgments(project, annotator_api, admin_api):
    make_round(project, prompts=2)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    annotator_api.post(f"/api/assignments/{lease['assignment_id']}/submit/", {"choice": "left"},
                       format="json")  # fmt: skip
    (other,) = annotators(project, 1)
    from annotate.services import assignment_lease_next, judgment_submit

    other_lease = assignment_lease_next(project=project, annotator=other)
    judgment_submit(assignment_id=other_lease.pk, annotator=other, choice="right")
    mine = annotator_api.get(f"/api/projects/{project.pk}/judgments/").json()["results"]
    everyone = admin_api.get(f"/api/projects/{project.pk}/judgments/").json()["results"]
    assert len(mine) == 1 and len(everyone) == 2


def test_skip_and_release(project, annotator_api):
    make_round(project, prompts=2)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    assert annotator_api.post(f"/api/assignments/{lease['assignment_id']}/skip/").status_code == 204
    nxt = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    assert nxt["assignment_id"] != lease["assignment_id"]
    url = f"/api/assignments/{nxt['assignment_id']}/release/"
    assert annotator_api.post(url).status_code == 204


def test_submit_with_lease_next_judges_a_queue_in_one_round_trip_per_pair(project, annotator_api):
    make_round(project, prompts=3)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    seen = [lease["assignment_id"]]
    while True:
        response = annotator_api.post(
            f"/api/assignments/{lease['assignment_id']}/submit/",
            {"choice": "left", "lease_next": True},
            format="json",
        )
        assert response.status_code == 201
        lease = response.json()["next"]
        if lease is None:
            break
        assert set(lease) >= {"assignment_id", "prompt", "left", "right"}
        assert "model_version" not in str(lease)
        seen.append(lease["assignment_id"])
    assert len(seen) == len(set(seen)) == 3
    assert Judgment.objects.count() == 3
    # Without the flag the answer is the judgment alone, as before.
    assert (
        "next"
        not in annotator_api.post(
            f"/api/assignments/{seen[0]}/submit/", {"choice": "left"}, format="json"
        ).json()
    )


def test_a_pause_after_the_submit_keeps_the_judgment_and_says_why_no_next(
    project, annotator_api, annotator
):
    make_round(project, prompts=2)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    Membership.objects.filter(project=project, user=annotator).update(paused=True)
    response = annotator_api.post(
        f"/api/assignments/{lease['assignment_id']}/submit/",
        {"choice": "tie", "lease_next": True},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["next"] is None and body["next_error"]["error"] == "paused"
    assert Judgment.objects.filter(pk=body["id"]).exists()


def test_the_submit_answer_is_exactly_the_judgment_serializer_shape(project, annotator_api):
    make_round(project, prompts=1)
    lease = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    body = annotator_api.post(
        f"/api/assignments/{lease['assignment_id']}/submit/",
        {"choice": "right", "strength": "slight", "rationale": "<b>x</b>"},
        format="json",
    ).json()
    stored = Judgment.objects.get(pk=body["id"])
    assert body == json.loads(JSONRenderer().render(JudgmentOutputSerializer(stored).data))

"""Admins change a live project's settings: loop, gates and the feedback mix."""

from __future__ import annotations

import pytest

from audit.models import AuditAction, AuditEvent

pytestmark = pytest.mark.django_db


def test_an_admin_changes_the_feedback_mix_and_the_algorithm_and_it_is_audited(project, admin_api):
    url = f"/api/projects/{project.pk}/"
    changes = {
        "training_algorithm": "kto",
        "demonstration_share": 0.2,
        "rating_share": 0.3,
        "rating_scale": "likert7",
        "review_demonstrations": True,
    }
    response = admin_api.patch(url, changes, format="json")
    assert response.status_code == 200, response.json()
    assert {key: response.json()[key] for key in changes} == changes
    project.refresh_from_db()
    assert (project.training_algorithm, project.rating_share) == ("kto", 0.3)
    event = AuditEvent.objects.get(action=AuditAction.PROJECT_UPDATED)
    assert event.detail["changed"]["training_algorithm"] == ["dpo", "kto"]


@pytest.mark.parametrize(
    "body",
    [
        {"demonstration_share": 0.7, "rating_share": 0.6},  # more than every prompt
        {"rating_share": -0.1},
        {"rating_scale": "stars"},
        {"training_algorithm": "magic"},
        {"round_quota": 0},
        {"ranking_size": 10},
        {"ranking_share": 0.5, "rating_share": 0.4, "demonstration_share": 0.2},
        {"review_demonstrations": "maybe"},
        {"gate_max_kl": "NaN"},
    ],
)
def test_a_bad_setting_is_a_400_that_changes_nothing(project, admin_api, body):
    response = admin_api.patch(f"/api/projects/{project.pk}/", body, format="json")
    assert response.status_code == 400 and "error" in response.json()
    project.refresh_from_db()
    assert (project.demonstration_share, project.rating_share) == (0.0, 0.0)
    assert project.training_algorithm == "dpo" and project.round_quota == 64


def test_only_admins_change_a_project(project, annotator_api, token_api):
    for client in (annotator_api, token_api):
        response = client.patch(f"/api/projects/{project.pk}/", {"gold_rate": 0.5}, format="json")
        assert response.status_code == 403
    project.refresh_from_db()
    assert project.gold_rate == 0.0

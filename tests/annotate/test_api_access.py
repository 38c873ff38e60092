"""Who sees what: annotators only their projects, programs by token, admins everything."""

from __future__ import annotations

import pytest

from annotate.models import Project

pytestmark = pytest.mark.django_db


def _slugs(response) -> list[str]:
    return [p["slug"] for p in response.json()["results"]]


def test_anonymous_requests_are_refused(anonymous_api, project):
    assert anonymous_api.get("/api/projects/").status_code in (401, 403)


def test_annotator_sees_only_their_projects(annotator_api, project, other_project):
    assert _slugs(annotator_api.get("/api/projects/")) == ["helpful"]
    assert annotator_api.get(f"/api/projects/{other_project.pk}/").status_code == 404
    assert annotator_api.get(f"/api/projects/{other_project.pk}/prompts/").status_code == 404


def test_admin_sees_every_project(admin_api, project, other_project):
    assert sorted(_slugs(admin_api.get("/api/projects/"))) == ["helpful", "other-team"]


def test_token_client_reaches_its_project(token_api, project, other_project):
    assert _slugs(token_api.get("/api/projects/")) == ["helpful"]
    assert token_api.get(f"/api/projects/{project.pk}/prompts/").status_code == 200


def test_bad_token_is_refused(project):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/projects/")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_only_admins_create_projects(admin_api, annotator_api):
    body = {"name": "New", "slug": "new", "required_annotations": 3}
    assert annotator_api.post("/api/projects/", body, format="json").status_code == 403
    created = admin_api.post("/api/projects/", body, format="json")
    assert created.status_code == 201, created.content
    assert Project.objects.get(slug="new").required_annotations == 3


def test_project_create_with_taken_slug_is_a_conflict(admin_api, project):
    response = admin_api.post("/api/projects/", {"name": "X", "slug": "helpful"}, format="json")
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


def test_project_create_rejects_bad_values(admin_api):
    response = admin_api.post(
        "/api/projects/",
        {"name": "X", "slug": "x", "required_annotations": 0, "training_algorithm": "magic"},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["detail"]) == {"required_annotations", "training_algorithm"}


def test_openapi_schema_and_docs_are_served(admin_api, admin_user, client):
    schema = admin_api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/projects/{project_id}/prompts/" in schema.json()["paths"]
    client.force_login(admin_user)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    # The interactive docs load their assets from our own static files, never a CDN.
    assert b"cdn" not in docs.content.lower()


def test_health_endpoint_needs_no_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"

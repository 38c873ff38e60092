"""Who changed what, when and from where: promotions, rollbacks, pauses, membership and token
changes, failed sign-ins; read-only for admins in the admin."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditAction, AuditEvent
from registry.models import ModelKind, ModelVersion
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
ADDRESS = "203.0.113.7"


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


def test_promotion_and_rollback_are_recorded_with_who_and_from_where(project, admin_api):
    base = ModelVersion.objects.get(project=project, kind=ModelKind.POLICY, number=0)
    newer = ModelVersion.objects.create(
        project=project, kind=ModelKind.POLICY, number=1, base_model="b", artifact_path="a"
    )
    promoted = admin_api.post(
        f"/api/versions/{newer.pk}/promote/", {"reason": "gates passed"}, REMOTE_ADDR=ADDRESS
    )
    assert promoted.status_code == 200
    admin_api.post(f"/api/versions/{base.pk}/promote/", {"reason": "worse"}, REMOTE_ADDR=ADDRESS)
    (promotion,) = _events(AuditAction.VERSION_PROMOTED)
    (rollback,) = _events(AuditAction.VERSION_ROLLED_BACK)
    assert promotion.actor_name == "admin" and promotion.origin == ADDRESS
    assert promotion.project_id == project.pk and promotion.target == "policy v1"
    assert promotion.detail == {"replaced": 0, "reason": "gates passed"}
    assert rollback.target == "policy v0" and rollback.detail["replaced"] == 1


def test_pauses_membership_and_tokens_are_recorded(project, annotator, admin_api):
    (added,) = _events(AuditAction.MEMBERSHIP_SET)  # the fixture's, by a program: no actor
    assert added.target == "user annotator" and added.detail == {"role": "annotator"}
    pause = f"/api/projects/{project.pk}/annotators/{annotator.pk}/pause/"
    admin_api.post(pause, {"paused": True}, REMOTE_ADDR=ADDRESS)
    admin_api.post(pause, {"paused": False}, REMOTE_ADDR=ADDRESS)
    admin_api.post(f"/api/web/users/{annotator.pk}/token/")
    admin_api.delete(f"/api/web/users/{annotator.pk}/token/")
    admin_api.delete(f"/api/web/projects/{project.pk}/members/{annotator.pk}/")
    for action in (
        AuditAction.ANNOTATOR_PAUSED,
        AuditAction.ANNOTATOR_RESUMED,
        AuditAction.TOKEN_ROTATED,
        AuditAction.TOKEN_REVOKED,
        AuditAction.MEMBERSHIP_REMOVED,
    ):
        (event,) = _events(action)
        assert event.actor_name == "admin", action
    assert _events(AuditAction.ANNOTATOR_PAUSED)[0].origin == ADDRESS


def test_a_failed_sign_in_is_recorded_with_its_address():
    UserFactory(username="dave")
    Client().post(
        "/api/web/login/",
        {"username": "dave", "password": "nope"},
        content_type="application/json",
        REMOTE_ADDR=ADDRESS,
    )
    (failure,) = _events(AuditAction.SIGN_IN_FAILED)
    assert failure.detail == {"username": "dave"} and failure.origin == ADDRESS
    assert failure.actor is None


def test_admins_read_the_trail_and_nobody_edits_it(admin_user):
    AuditEvent.objects.create(action=AuditAction.TOKEN_REVOKED, target="user 1")
    admin = Client()
    admin.force_login(admin_user)
    page = admin.get("/admin/audit/auditevent/")
    assert page.status_code == 200 and b"user 1" in page.content
    assert admin.get("/admin/audit/auditevent/add/").status_code == 403
    event = AuditEvent.objects.get()
    assert (
        admin.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert AuditEvent.objects.count() == 1

"""Exactly one active policy per project, through promotion and rollback."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from config.errors import ApplicationError
from registry.models import ModelKind, ModelVersion, PromotionEvent, VersionStatus
from registry.selectors import active_policy
from registry.services import version_promote
from tests.factories import PolicyVersionFactory

pytestmark = pytest.mark.django_db


def _active_policies(project) -> list[int]:
    return list(
        ModelVersion.objects.filter(
            project=project, kind=ModelKind.POLICY, status=VersionStatus.ACTIVE
        ).values_list("number", flat=True)
    )


def test_new_project_starts_with_its_base_policy_active(project):
    base = active_policy(project_id=project.pk)
    assert (base.number, base.artifact_path, base.base_model) == (0, "", project.base_model)


def test_database_rejects_a_second_active_policy(project):
    with pytest.raises(IntegrityError), transaction.atomic():
        PolicyVersionFactory(project=project, status=VersionStatus.ACTIVE)


def test_active_reward_and_policy_coexist(project):
    PolicyVersionFactory(project=project, kind=ModelKind.REWARD, status=VersionStatus.ACTIVE)
    assert _active_policies(project) == [0]


def test_promote_then_rollback_keeps_exactly_one_active_and_records_who(project, admin_user):
    base = active_policy(project_id=project.pk)
    v1 = PolicyVersionFactory(project=project, number=1, parent=base)
    version_promote(version=v1, actor=admin_user, reason="passed gates")
    assert _active_policies(project) == [1]
    version_promote(version=base, actor=admin_user, reason="v1 regressed")
    assert _active_policies(project) == [0]
    events = list(PromotionEvent.objects.order_by("id").values_list("action", "actor__username"))
    assert events == [("promote", "admin"), ("rollback", "admin")]
    v1.refresh_from_db()
    assert v1.status == VersionStatus.RETIRED


def test_promoting_the_active_version_is_refused(project):
    with pytest.raises(ApplicationError, match="already active"):
        version_promote(version=active_policy(project_id=project.pk))


def test_promotion_in_one_project_leaves_another_alone(project, other_project):
    v1 = PolicyVersionFactory(project=project, number=1)
    version_promote(version=v1)
    assert _active_policies(project) == [1]
    assert _active_policies(other_project) == [0]

"""Reads for the version registry."""

from __future__ import annotations

from config.errors import ApplicationError
from registry.models import ModelKind, ModelVersion, VersionStatus


def active_policy(*, project_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(
        project_id=project_id, kind=ModelKind.POLICY, status=VersionStatus.ACTIVE
    ).first()
    if version is None:
        raise ApplicationError("This project has no active policy.", code="no_policy")
    return version


def newest_candidate(*, project_id: int) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(
            project_id=project_id, kind=ModelKind.POLICY, status=VersionStatus.CANDIDATE
        )
        .order_by("-number")
        .first()
    )


def reward_model_for(*, project_id: int) -> ModelVersion | None:
    """The reward model that judges candidates: the active one, else the newest."""
    versions = ModelVersion.objects.filter(project_id=project_id, kind=ModelKind.REWARD)
    return (
        versions.filter(status=VersionStatus.ACTIVE).first() or versions.order_by("-number").first()
    )

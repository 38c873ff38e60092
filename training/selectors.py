"""Reads for the model lifecycle."""

from __future__ import annotations

from annotate.models import Project
from config.errors import ApplicationError
from training.models import ModelKind, ModelVersion, VersionStatus


def active_policy(*, project: Project) -> ModelVersion:
    version = ModelVersion.objects.filter(
        project=project, kind=ModelKind.POLICY, status=VersionStatus.ACTIVE
    ).first()
    if version is None:
        raise ApplicationError(f"Project {project.slug} has no active policy.", code="no_policy")
    return version

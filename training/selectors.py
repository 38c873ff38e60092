"""Reads for the loop's API: runs, their metric points, versions and rounds of a project."""

from __future__ import annotations

from django.db.models import QuerySet

from annotate.models import Project, Round
from config.errors import NotFoundError
from registry.models import ModelVersion
from training.models import MetricPoint, TrainingRun


def run_project_id(*, run_id: int) -> int:
    project_id = TrainingRun.objects.filter(pk=run_id).values_list("project_id", flat=True).first()
    if project_id is None:
        raise NotFoundError(f"Run {run_id} does not exist.")
    return project_id


def run_get(*, run_id: int) -> TrainingRun:
    run = TrainingRun.objects.select_related("project").filter(pk=run_id).first()
    if run is None:
        raise NotFoundError(f"Run {run_id} does not exist.")
    return run


def runs_of_project(*, project: Project) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.filter(project=project).order_by("-id")


def run_metric_points(*, run: TrainingRun, after_step: int | None) -> QuerySet[MetricPoint]:
    points = run.metric_points.order_by("step", "split", "name")
    return points if after_step is None else points.filter(step__gt=after_step)


def version_project_id(*, version_id: int) -> int:
    project_id = (
        ModelVersion.objects.filter(pk=version_id).values_list("project_id", flat=True).first()
    )
    if project_id is None:
        raise NotFoundError(f"Version {version_id} does not exist.")
    return project_id


def version_get(*, version_id: int, project: Project | None = None) -> ModelVersion:
    versions = ModelVersion.objects.filter(pk=version_id)
    version = (versions if project is None else versions.filter(project=project)).first()
    if version is None:
        where = "" if project is None else " in this project"
        raise NotFoundError(f"Version {version_id} does not exist{where}.")
    return version


def versions_of_project(*, project: Project) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project=project).order_by("kind", "number")


def rounds_of_project(*, project: Project) -> QuerySet[Round]:
    return project.rounds.order_by("number")


def round_get(*, project: Project, number: int) -> Round:
    round_ = project.rounds.filter(number=number).first()
    if round_ is None:
        raise NotFoundError(f"Round {number} does not exist.")
    return round_

"""Writes for training runs: create, claim, heartbeat, metrics, finish, cancel, retry, reap."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from annotate.models import Project, Round
from config.errors import ApplicationError, ConflictError
from config.users import User
from registry.models import ModelKind, ModelVersion
from registry.selectors import newest_candidate
from training.models import MetricPoint, RunKind, RunStatus, TrainingRun
from training.project_settings import run_config_errors

logger = logging.getLogger(__name__)

# --- Training runs: the database row is the source of truth ---------------------------------


@transaction.atomic
def training_run_create(
    *,
    project: Project,
    kind: str,
    config: dict[str, Any] | None = None,
    round: Round | None = None,
    created_by: User | None = None,
    chained: bool = False,
    input_version: ModelVersion | None = None,
) -> TrainingRun:
    """Queue a run; the worker is asked for it only once this transaction has committed.

    A chained run queues the next step of its round's chain when it succeeds (training.pipeline).
    """
    if kind not in RunKind.values:
        raise ApplicationError(f"kind must be one of {', '.join(RunKind.values)}.")
    config_errors = run_config_errors(kind, config or {})
    if config_errors:
        raise ApplicationError(
            " ".join(config_errors), code="invalid_settings", extra={"errors": config_errors}
        )
    if kind == RunKind.GENERATE and round is None:
        raise ApplicationError("A generate run needs the round whose answers it writes.")
    if kind == RunKind.EVALUATE:
        input_version = input_version or newest_candidate(project_id=project.pk)
        trained = input_version is not None and bool(input_version.artifact_path)
        if input_version is None or not trained or input_version.kind != ModelKind.POLICY:
            raise ApplicationError("An evaluate run needs a trained policy version to evaluate.")
    run = TrainingRun.objects.create(
        project=project,
        kind=kind,
        config=config or {},
        round=round,
        created_by=created_by,
        chained=chained,
        input_version=input_version,
    )
    transaction.on_commit(lambda: enqueue_run(run.pk))
    return run


# The task is named, not imported: training.tasks builds on this module, never the reverse.
RUN_TRAINING_TASK = "training.tasks.run_training"


AI_JUDGE_TASK = "training.tasks.run_ai_judge"


def ai_judge_enqueue(*, judge_id: int, limit: int) -> None:
    """Ask a worker for a judging pass; a broker that is down is a clear 503, not a 500."""
    try:
        current_app.tasks[AI_JUDGE_TASK].delay(judge_id, limit)
    except (BrokerError, OSError) as error:
        raise ApplicationError(
            f"The task queue is unavailable ({error}); try again shortly.",
            code="unavailable",
            http_status=503,
        ) from error


def enqueue_run(run_id: int) -> None:
    """Ask a worker for the run. A broker that is down is not an error here: the run stays
    queued in the database and `training_runs_resend_lost` asks again later."""
    TrainingRun.objects.filter(pk=run_id).update(
        enqueued_at=timezone.now(), enqueue_count=F("enqueue_count") + 1
    )
    try:
        # Looked up in the app's registry (training.apps imports the tasks at start-up), so
        # eager mode and the queue routes in settings apply as for a direct .delay().
        current_app.tasks[RUN_TRAINING_TASK].delay(run_id)
    except (BrokerError, OSError) as error:
        logger.warning("Run %s stays queued; the broker refused it (%s).", run_id, error)


def resend_delay_seconds(*, after_seconds: int, times_sent: int) -> int:
    """How long a queued run waits before it is asked for again: doubling per send, so a run
    that waits behind a long one on a busy worker is not sent every minute for hours."""
    return after_seconds * 2 ** min(max(times_sent - 1, 0), 4)


def training_runs_resend_lost(*, after_seconds: int) -> list[int]:
    """Send again the queued runs whose message may be lost; returns their ids.

    A duplicate message is harmless: the claim is a conditional UPDATE on status=queued, so
    the second delivery finds the run taken and does nothing.
    """
    now = timezone.now()
    resent = []
    queued = TrainingRun.objects.filter(status=RunStatus.QUEUED)
    for run_id, enqueued_at, times_sent in queued.values_list("pk", "enqueued_at", "enqueue_count"):
        wait = resend_delay_seconds(after_seconds=after_seconds, times_sent=times_sent)
        if enqueued_at is None or enqueued_at < now - timedelta(seconds=wait):
            enqueue_run(run_id)
            resent.append(run_id)
    return resent


def training_run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
    """Take a queued run for this worker, or None if another worker has it (or it is not queued).

    A conditional UPDATE: the database checks status=queued at write time, so of two workers
    racing for one run exactly one changes the row and goes on.
    """
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING,
        worker=worker[:200],
        started_at=now,
        heartbeat_at=now,
        attempt=F("attempt") + 1,
        error="",
    )
    return TrainingRun.objects.get(pk=run_id) if claimed else None


def training_run_heartbeat(*, run_id: int, step: int, total_steps: int | None) -> bool:
    """Record progress and liveness; returns True when cancellation was asked for."""
    TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
        step=step if total_steps is None else min(step, total_steps),
        total_steps=total_steps,
        heartbeat_at=timezone.now(),
    )
    return TrainingRun.objects.filter(pk=run_id, cancel_requested=True).exists()


def training_run_record_metrics(
    *, run_id: int, step: int, split: str, metrics: dict[str, float]
) -> None:
    points = [
        MetricPoint(run_id=run_id, step=step, split=split, name=name[:100], value=float(value))
        for name, value in metrics.items()
        if isinstance(value, int | float) and math.isfinite(value)
    ]
    # A resumed run logs some steps again: the newer value replaces the older one.
    MetricPoint.objects.bulk_create(
        points,
        update_conflicts=True,
        unique_fields=["run", "step", "split", "name"],
        update_fields=["value"],
    )


def training_run_finish(
    *,
    run_id: int,
    status: str,
    error: str = "",
    output_version: ModelVersion | None = None,
) -> bool:
    """Record how a running run ended; False when it was not running any more (the reaper or a
    cancel got there first), in which case nothing is changed."""
    return bool(
        TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
            status=status,
            error=error[:10_000],
            output_version=output_version,
            finished_at=timezone.now(),
        )
    )


@transaction.atomic
def training_run_beat(*, run_id: int) -> bool:
    """The worker is alive and on this run (between steps too); False once it is not running.

    A row locked this instant is skipped, not waited on: whoever holds it is the worker
    itself registering its model (or the reaper or a cancel, whose write then decides).
    """
    locked = (
        TrainingRun.objects.select_for_update(skip_locked=True)
        .filter(pk=run_id, status=RunStatus.RUNNING)
        .values_list("pk", flat=True)
        .first()
    )
    if locked is not None:
        TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )
        return True
    # Not running, or locked by someone else: only the first ends the beating.
    return TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).exists()


def training_run_lock_if_ours(*, run_id: int, worker: str) -> bool:
    """Row-lock the run for the rest of the transaction if this worker still runs it.

    A trained model is registered only under this lock: a run the reaper marked failed (or a
    retry gave to another worker) in the meantime never registers a version.
    """
    return (
        TrainingRun.objects.select_for_update()
        .filter(pk=run_id, status=RunStatus.RUNNING, worker=worker[:200])
        .exists()
    )


@transaction.atomic
def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run is cancelled at once; a running one stops within a step."""
    if TrainingRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    ):
        return TrainingRun.objects.get(pk=run.pk)
    if not TrainingRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        cancel_requested=True
    ):
        raise ConflictError(f"Run {run.pk} has already finished ({run.status}).")
    return TrainingRun.objects.get(pk=run.pk)


@transaction.atomic
def training_run_retry(*, run: TrainingRun) -> TrainingRun:
    """Queue a failed or cancelled run again; it resumes from its last checkpoint."""
    retried = TrainingRun.objects.filter(
        pk=run.pk, status__in=[RunStatus.FAILED, RunStatus.CANCELLED]
    ).update(status=RunStatus.QUEUED, cancel_requested=False, finished_at=None)
    if not retried:
        raise ConflictError(
            f"Only failed or cancelled runs can be retried; this one is {run.status}."
        )
    transaction.on_commit(lambda: enqueue_run(run.pk))
    return TrainingRun.objects.get(pk=run.pk)


def training_runs_reap(*, stale_after_seconds: int) -> list[int]:
    """Mark running runs whose worker stopped sending heartbeats as failed (retry resumes them).

    Each run is failed by an UPDATE that checks the heartbeat again at write time: a run whose
    worker beat between the read and the write is alive and is left alone.
    """
    cutoff = timezone.now() - timedelta(seconds=stale_after_seconds)
    candidates = TrainingRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff)
    reaped = []
    for run_id in list(candidates.values_list("pk", flat=True)):
        failed = TrainingRun.objects.filter(
            pk=run_id, status=RunStatus.RUNNING, heartbeat_at__lt=cutoff
        ).update(
            status=RunStatus.FAILED,
            error=f"The worker stopped sending heartbeats for {stale_after_seconds} s "
            "(killed or lost); retry to resume from the last checkpoint.",
            finished_at=timezone.now(),
        )
        if failed:
            reaped.append(run_id)
    return reaped

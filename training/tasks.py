"""Celery tasks for the model lifecycle: thin, they take ids and call one service."""

from celery import shared_task
from django.conf import settings

from training.ai_judges import ai_judge_run
from training.pipeline import annotators_auto_pause, rounds_check_triggers
from training.runner import training_run_execute
from training.services import (
    RUN_TRAINING_TASK,
    training_runs_reap,
    training_runs_resend_lost,
)

# A run sends a heartbeat every step; this long without one means its worker is gone.
STALE_RUN_SECONDS = 600
# A queued run nobody claimed this long after it was sent is sent again (then 2x, 4x... later).
RESEND_QUEUED_RUN_SECONDS = 300


@shared_task(
    name=RUN_TRAINING_TASK,
    acks_late=True,
    soft_time_limit=settings.GPU_TASK_TIME_LIMIT - 60,
    time_limit=settings.GPU_TASK_TIME_LIMIT,
)
def run_training(run_id: int) -> str | None:
    return training_run_execute(run_id=run_id)


@shared_task(
    name="training.tasks.reap_stale_runs", acks_late=True, soft_time_limit=50, time_limit=60
)
def reap_stale_runs() -> list[int]:
    return training_runs_reap(stale_after_seconds=STALE_RUN_SECONDS)


@shared_task(
    name="training.tasks.check_round_triggers", acks_late=True, soft_time_limit=50, time_limit=60
)
def check_round_triggers() -> list[int]:
    return rounds_check_triggers()


@shared_task(
    name="training.tasks.resend_lost_runs", acks_late=True, soft_time_limit=50, time_limit=60
)
def resend_lost_runs() -> list[int]:
    return training_runs_resend_lost(after_seconds=RESEND_QUEUED_RUN_SECONDS)


@shared_task(
    name="training.tasks.auto_pause_annotators", acks_late=True, soft_time_limit=50, time_limit=60
)
def auto_pause_annotators() -> dict[int, list[int]]:
    return annotators_auto_pause()


@shared_task(
    name="training.tasks.run_ai_judge", acks_late=True, soft_time_limit=1700, time_limit=1800
)
def run_ai_judge(judge_id: int, limit: int = 20) -> int:
    return ai_judge_run(judge_id=judge_id, limit=limit)

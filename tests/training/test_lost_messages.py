"""A run whose message the broker lost is asked for again; a broker that is down loses no run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from training import services
from training.models import RunKind, RunStatus, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """The run ids handed to the broker, in order (nothing is really sent)."""
    ids: list[int] = []

    class Task:
        def delay(self, run_id: int) -> None:
            ids.append(run_id)

    monkeypatch.setitem(services.current_app.tasks, services.RUN_TRAINING_TASK, Task())
    return ids


def _queued(project, *, sent_seconds_ago: float | None, times_sent: int = 1) -> TrainingRun:
    enqueued_at = None
    if sent_seconds_ago is not None:
        enqueued_at = timezone.now() - timedelta(seconds=sent_seconds_ago)
    return TrainingRun.objects.create(
        project=project, kind=RunKind.REWARD, enqueued_at=enqueued_at, enqueue_count=times_sent
    )


def test_a_created_run_records_when_it_was_sent(project, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.training_run_create(project=project, kind=RunKind.REWARD)
    run.refresh_from_db()
    assert sent == [run.pk]
    assert run.enqueue_count == 1 and run.enqueued_at is not None


def test_queued_runs_unclaimed_past_the_delay_are_sent_again(project, sent):
    lost = _queued(project, sent_seconds_ago=400)
    never_sent = _queued(project, sent_seconds_ago=None, times_sent=0)
    fresh = _queued(project, sent_seconds_ago=10)
    running = _queued(project, sent_seconds_ago=400)
    TrainingRun.objects.filter(pk=running.pk).update(status=RunStatus.RUNNING)

    assert sorted(services.training_runs_resend_lost(after_seconds=300)) == sorted(
        [lost.pk, never_sent.pk]
    )
    assert sorted(sent) == sorted([lost.pk, never_sent.pk])
    lost.refresh_from_db()
    assert lost.enqueue_count == 2 and lost.enqueued_at > timezone.now() - timedelta(seconds=5)
    fresh.refresh_from_db()
    assert fresh.enqueue_count == 1


def test_the_resend_delay_doubles_so_a_long_wait_is_not_flooded(project, sent):
    waited = _queued(project, sent_seconds_ago=700, times_sent=3)  # due after 4 x 300 s
    assert services.training_runs_resend_lost(after_seconds=300) == []
    TrainingRun.objects.filter(pk=waited.pk).update(
        enqueued_at=timezone.now() - timedelta(seconds=1300)
    )
    assert services.training_runs_resend_lost(after_seconds=300) == [waited.pk]
    assert services.resend_delay_seconds(after_seconds=300, times_sent=40) == 300 * 16


def test_a_broker_that_is_down_leaves_the_run_queued_for_the_resend(
    project, monkeypatch, django_capture_on_commit_callbacks
):
    class DownBroker:
        def delay(self, run_id: int) -> None:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setitem(services.current_app.tasks, services.RUN_TRAINING_TASK, DownBroker())
    with django_capture_on_commit_callbacks(execute=True):
        run = services.training_run_create(project=project, kind=RunKind.REWARD)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.enqueue_count == 1

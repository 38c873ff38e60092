"""A run that is alive is never declared dead, and a run declared dead never registers a model."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from registry.models import ModelKind, ModelVersion
from registry.selectors import active_policy
from tests.training.helpers import judged_pairs
from training import runner, services
from training.models import RunKind, RunStatus, TrainingRun


def _running(project, *, beat_age_s: float, worker: str = "w:1") -> TrainingRun:
    return TrainingRun.objects.create(
        project=project,
        kind=RunKind.REWARD,
        status=RunStatus.RUNNING,
        worker=worker,
        started_at=timezone.now(),
        heartbeat_at=timezone.now() - timedelta(seconds=beat_age_s),
    )


@pytest.mark.django_db
def test_the_reaper_rechecks_the_heartbeat_when_it_writes(project, monkeypatch):
    run = _running(project, beat_age_s=900)
    listed = services.TrainingRun.objects.filter

    def beat_between_read_and_write(*args, **kwargs):
        # The worker beats right after the reaper listed the run as stale.
        if "heartbeat_at__lt" in kwargs and "pk" in kwargs:
            TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
        return listed(*args, **kwargs)

    monkeypatch.setattr(services.TrainingRun.objects, "filter", beat_between_read_and_write)
    assert services.training_runs_reap(stale_after_seconds=600) == []
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


@pytest.mark.django_db
def test_finish_says_whether_it_finished_the_run(project):
    alive = _running(project, beat_age_s=0)
    assert services.training_run_finish(run_id=alive.pk, status=RunStatus.CANCELLED) is True
    run = _running(project, beat_age_s=900)
    assert services.training_runs_reap(stale_after_seconds=600) == [run.pk]
    assert services.training_run_finish(run_id=run.pk, status=RunStatus.SUCCEEDED) is False
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


@pytest.mark.django_db(transaction=True)
def test_a_long_phase_without_steps_keeps_beating(project, monkeypatch):
    run = TrainingRun.objects.create(project=project, kind=RunKind.EVALUATE)
    beats: list = []

    def a_silent_phase(run_, callbacks):
        # No step, no progress: only the heartbeat thread can move heartbeat_at. Wait for it
        # (a bound, not a timing figure: a loaded machine just takes longer).
        started = TrainingRun.objects.get(pk=run_.pk).heartbeat_at
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            latest = TrainingRun.objects.get(pk=run_.pk).heartbeat_at
            if latest > started:
                beats.append((started, latest))
                break
            time.sleep(0.05)
        return None

    monkeypatch.setitem(runner.RUNNERS, RunKind.EVALUATE, a_silent_phase)
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.2)
    assert runner.training_run_execute(run_id=run.pk, worker="w:1") == RunStatus.SUCCEEDED
    ((started, later),) = beats
    assert later > started


@pytest.mark.django_db
def test_a_run_reaped_while_it_trained_registers_no_version(tiny_project, no_broker, monkeypatch):
    import training.engine.reward as reward_engine

    judged_pairs(tiny_project, 8)
    run = TrainingRun.objects.create(project=tiny_project, kind=RunKind.REWARD, chained=True)
    real_train = reward_engine.train_reward

    def train_then_get_reaped(*args, **kwargs):
        result = real_train(*args, **kwargs)
        TrainingRun.objects.filter(pk=run.pk).update(
            heartbeat_at=timezone.now() - timedelta(hours=1)
        )
        assert services.training_runs_reap(stale_after_seconds=600) == [run.pk]
        return result

    monkeypatch.setattr(reward_engine, "train_reward", train_then_get_reaped)
    before = ModelVersion.objects.filter(project=tiny_project, kind=ModelKind.REWARD).count()
    assert runner.training_run_execute(run_id=run.pk, worker="w:1") == RunStatus.FAILED
    run.refresh_from_db()
    assert run.output_version is None and "heartbeats" in run.error
    after = ModelVersion.objects.filter(project=tiny_project, kind=ModelKind.REWARD).count()
    assert after == before
    assert not TrainingRun.objects.filter(project=tiny_project).exclude(pk=run.pk).exists()
    assert no_broker == []  # the chain did not go on


@pytest.mark.django_db
def test_a_full_disk_while_publishing_fails_the_run_cleanly_and_the_parent_keeps_serving(
    tiny_project, monkeypatch
):
    import errno

    judged_pairs(tiny_project, 16)
    run = TrainingRun.objects.create(project=tiny_project, kind=RunKind.DPO)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "publish_artifact", disk_full)
    assert runner.training_run_execute(run_id=run.pk, worker="w:1") == RunStatus.FAILED
    run.refresh_from_db()
    assert "No space left on device" in run.error and run.output_version is None
    assert not ModelVersion.objects.filter(project=tiny_project, number__gt=0).exists()
    assert active_policy(project_id=tiny_project.pk).number == 0  # the parent still serves
    # The finished artifact stays in the run's work folder; with room again, a retry registers it.
    monkeypatch.undo()
    services.training_run_retry(run=run)
    assert runner.training_run_execute(run_id=run.pk, worker="w:1") == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.output_version is not None and run.output_version.number == 1

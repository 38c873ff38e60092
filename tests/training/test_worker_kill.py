"""A real Celery worker is SIGKILLed mid-run: the run fails, nothing changes, a retry resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotate.models import Comparison
from registry.models import ModelVersion
from registry.selectors import active_policy
from tests.engine.tiny import save_tiny_llama
from tests.test_worker import ROOT, _database_url_of_test_database
from tests.training.helpers import TINY_TRAINING, judged_pairs
from training import runner, services
from training.models import RunStatus, TrainingRun

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def start_worker(artifacts: Path) -> subprocess.Popen:
    from config.celery import app

    app.control.purge()
    environment = dict(
        os.environ, DATABASE_URL=_database_url_of_test_database(), ARTIFACTS_DIR=str(artifacts)
    )
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-Q",
         "default,gpu", "--without-mingle", "--without-gossip", "--loglevel=WARNING"],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for(condition, seconds: float, worker: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        if worker.poll() is not None:
            raise AssertionError(worker.stdout.read())
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.parametrize("kind", ["dpo", "reward"])
def test_sigkilled_worker_leaves_a_failed_run_and_a_retry_resumes(
    project, tmp_path, settings, kind
):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    base = save_tiny_llama(tmp_path / "tiny-llama")
    project.base_model = project.reward_backbone = str(base)
    project.training_settings = {kind: {**TINY_TRAINING, "max_steps": 400}}
    project.save()
    ModelVersion.objects.filter(project=project).update(base_model=str(base))
    judged_pairs(project, 16)
    assert Comparison.objects.filter(status="complete").count() == 16

    worker = start_worker(settings.ARTIFACTS_DIR)
    try:
        run = services.training_run_create(project=project, kind=kind)  # enqueued on commit
        wait_for(lambda: TrainingRun.objects.get(pk=run.pk).step >= 5, 180, worker)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()

    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.RUNNING  # nobody said otherwise
    assert services.training_runs_reap(stale_after_seconds=0) == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert not ModelVersion.objects.filter(project=project, number__gt=0).exists()
    assert active_policy(project_id=project.pk).number == 0
    assert (runner.run_work_dir(run) / "checkpoint").exists()

    services.training_run_retry(run=run)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.attempt == 2 and run.output_version.status == "candidate"

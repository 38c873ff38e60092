"""A real Celery worker is SIGKILLed in each phase of the loop: the run is failed by the reaper,
nothing half-written is registered or stored, and a retry resumes and finishes it once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from annotate.models import Comparison, Response, RoundStatus
from registry.models import ModelKind, ModelVersion
from registry.selectors import active_policy
from tests.factories import PromptFactory
from tests.test_worker import ROOT, _database_url_of_test_database
from tests.training.helpers import TINY_TRAINING, judged_pairs
from tests.training.test_pipeline import TINY_ONLINE_RL
from training import pipeline, runner, services
from training.models import RunKind, RunStatus, TrainingRun

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Long enough that the kill lands in the middle; the retry finishes the rest.
LONG = {**TINY_TRAINING, "max_steps": 400}


def start_worker(artifacts: Path, **environ: str) -> subprocess.Popen:
    from config.celery import app

    app.control.purge()
    environment = dict(
        os.environ,
        DATABASE_URL=_database_url_of_test_database(),
        ARTIFACTS_DIR=str(artifacts),
        **environ,
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


@pytest.fixture
def tiny(tiny_project):
    return tiny_project


def _trained_in_process(project, kind: str, **extra) -> ModelVersion:
    run = services.training_run_create(project=project, kind=kind, **extra)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    return run.output_version


def _run_killed_mid_phase(project, settings, create, started) -> TrainingRun:
    """Start a worker, queue the run `create()` makes, SIGKILL the worker once `started(run)`
    holds, and reap: the run is failed by the reaper, as the beat would."""
    worker = start_worker(settings.ARTIFACTS_DIR)
    try:
        run = create()  # enqueued on commit
        wait_for(lambda: started(TrainingRun.objects.get(pk=run.pk)), 240, worker)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.RUNNING  # nobody said otherwise
    assert services.training_runs_reap(stale_after_seconds=0) == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    return run


def _retried(run: TrainingRun) -> TrainingRun:
    services.training_run_retry(run=run)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.attempt == 2
    return run


@pytest.mark.parametrize("kind", ["reward", "dpo", "ppo"])
def test_a_training_phase_killed_mid_run_registers_nothing_and_the_retry_resumes(
    tiny, settings, kind
):
    judged_pairs(tiny, 16)
    assert Comparison.objects.filter(status="complete").count() == 16
    extra: dict = {}
    if kind == "ppo":
        extra["input_version"] = _trained_in_process(tiny, "reward")
        tiny.training_settings = {**tiny.training_settings, "ppo": {**TINY_ONLINE_RL, **LONG}}
    else:
        tiny.training_settings = {**tiny.training_settings, kind: LONG}
    tiny.save()
    versions_before = set(ModelVersion.objects.values_list("pk", flat=True))

    run = _run_killed_mid_phase(
        tiny,
        settings,
        lambda: services.training_run_create(project=tiny, kind=kind, **extra),
        lambda run: run.step >= 5,
    )
    assert set(ModelVersion.objects.values_list("pk", flat=True)) == versions_before
    assert active_policy(project_id=tiny.pk).number == 0
    assert (runner.run_work_dir(run) / "checkpoint").exists()

    run = _retried(run)
    new = set(ModelVersion.objects.values_list("pk", flat=True)) - versions_before
    assert new == {run.output_version.pk}  # exactly one version, the retry's
    assert run.output_version.status == "candidate"
    assert run.output_version.kind == (ModelKind.REWARD if kind == "reward" else ModelKind.POLICY)


PROMPTS = 96  # 24 stored chunks: the kill lands long before the last


def test_generation_killed_mid_round_stores_whole_prompts_and_the_retry_writes_the_rest(
    tiny, settings
):
    for index in range(PROMPTS):
        PromptFactory(project=tiny, text=f"Say something about topic number {index}.")
    tiny.generation_settings = {**tiny.generation_settings, "max_new_tokens": 48, "batch_size": 2}
    tiny.save()
    samples = tiny.generation_settings["samples_per_prompt"]

    run = _run_killed_mid_phase(
        tiny,
        settings,
        lambda: pipeline.round_start(project=tiny)[1],
        # Past the first stored chunk (4 batches of 2 rows), before the last.
        lambda run: Response.objects.filter(round=run.round).count() >= 8,
    )
    per_prompt = Counter(Response.objects.filter(round=run.round).values_list("prompt", flat=True))
    assert set(per_prompt.values()) == {samples}  # every stored prompt whole, none half
    assert 0 < len(per_prompt) < PROMPTS
    assert not Comparison.objects.filter(round=run.round).exists()  # pairs only once all is written
    first_attempt = set(Response.objects.filter(round=run.round).values_list("pk", flat=True))

    run = _retried(run)
    responses = Response.objects.filter(round=run.round)
    assert set(responses.values_list("pk", flat=True)) >= first_attempt  # kept, not redone
    per_prompt = Counter(responses.values_list("prompt", flat=True))
    assert len(per_prompt) == PROMPTS and set(per_prompt.values()) == {samples}
    assert Comparison.objects.filter(round=run.round).count() == PROMPTS
    assert run.round.status == RoundStatus.OPEN


def test_evaluation_killed_mid_run_records_no_verdict_and_the_retry_does(tiny, settings):
    for index in range(24):
        PromptFactory(project=tiny, text=f"Explain idea number {index} in a sentence.")
    judged_pairs(tiny, 8)
    candidate = _trained_in_process(tiny, "dpo")
    tiny.training_settings = {
        **tiny.training_settings,
        "evaluation": {"heldout_fraction": 0.9, "max_prompts": 24, "samples_per_prompt": 2},
    }
    tiny.generation_settings = {**tiny.generation_settings, "max_new_tokens": 48, "batch_size": 2}
    tiny.save()

    run = _run_killed_mid_phase(
        tiny,
        settings,
        lambda: services.training_run_create(
            project=tiny, kind=RunKind.EVALUATE, input_version=candidate
        ),
        lambda run: run.step >= 2,
    )
    candidate.refresh_from_db()
    assert candidate.gate_results == {} and candidate.status == "candidate"
    assert not runner.evaluation_samples_path(run).exists()
    assert active_policy(project_id=tiny.pk).number == 0

    _retried(run)
    candidate.refresh_from_db()
    assert candidate.gate_results["run"] == run.pk and "passed" in candidate.gate_results
    assert runner.evaluation_samples_path(run).exists()

"""The whole chain on a real Celery worker: the broker CI gives (Redis) or the embedded one."""

from __future__ import annotations

import time

import pytest

from annotate.models import Response, Round, RoundStatus
from registry.selectors import active_policy
from tests.factories import PromptFactory
from tests.test_worker import start_worker, stop_worker
from tests.training.test_pipeline import AlphabeticalOracle
from training import pipeline
from training.models import RunKind, RunStatus, TrainingRun
from training.simulation import simulate_judging

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def wait_for(condition, worker, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        if worker.poll() is not None:
            pytest.fail(f"the worker exited:\n{worker.stdout.read()}")
        failed = TrainingRun.objects.filter(status=RunStatus.FAILED).first()
        if failed is not None:
            pytest.fail(f"{failed.kind} run failed: {failed.error}")
        time.sleep(0.5)
    pytest.fail("timed out; runs: " + str(list(TrainingRun.objects.values_list("kind", "status"))))


def test_a_round_closed_by_its_last_judgment_is_served_by_a_new_version(tiny_project, tmp_path):
    project = tiny_project
    project.auto_promote = True
    project.gate_min_win_rate, project.gate_max_kl, project.gate_min_heldout_accuracy = 0, 1e6, 0
    project.training_settings = {
        **project.training_settings,
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 4},
    }
    project.save()
    for index in range(8):
        PromptFactory(project=project, text=f"Tell me about thing {index}.")
    worker = start_worker({"ARTIFACTS_DIR": str(tmp_path / "artifacts")})
    try:
        first, _ = pipeline.round_start(project=project)  # the worker writes the answers
        wait_for(lambda: first.comparisons.count() == 8, worker)
        simulate_judging(project=project, oracle=AlphabeticalOracle(), round=first)

        # The last submit closed the round; the worker trains, evaluates, promotes, and opens
        # round 2, whose answers the new version writes.
        wait_for(
            lambda: Response.objects.filter(round__number=2, round__project=project).exists(),
            worker,
        )
    finally:
        stop_worker(worker)
    first.refresh_from_db()
    assert first.status == RoundStatus.TRAINED
    chain = TrainingRun.objects.filter(round=first, chained=True).order_by("id")
    assert list(chain.values_list("kind", "status")) == [
        (RunKind.REWARD, RunStatus.SUCCEEDED),
        (RunKind.DPO, RunStatus.SUCCEEDED),
        (RunKind.EVALUATE, RunStatus.SUCCEEDED),
    ]
    serving = active_policy(project_id=project.pk)
    assert serving.number == 1 and serving.gate_results["passed"]
    second = Round.objects.get(project=project, number=2)
    assert second.policy == serving
    writers = Response.objects.filter(round=second).values_list("model_version", flat=True)
    assert set(writers) == {serving.pk}

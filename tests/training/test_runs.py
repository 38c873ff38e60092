"""Training runs through the database: claim once, progress and metrics, cancel, crash, resume."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from annotate.models import Comparison, Response, Round, TrainingAlgorithm
from annotate.services import round_open
from registry.models import ModelKind, ModelVersion
from registry.selectors import active_policy
from tests.factories import PromptFactory
from tests.training.helpers import judged_pairs
from training import runner, services
from training.models import MetricPoint, RunKind, RunStatus, TrainingRun
from training.pipeline import POLICY_RUN_KINDS, prompt_is_heldout
from training.project_settings import training_settings_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]


def test_two_workers_racing_for_one_run_one_wins(tiny_project):
    run = services.training_run_create(project=tiny_project, kind="dpo")
    first = services.training_run_claim(run_id=run.pk, worker="a")
    second = services.training_run_claim(run_id=run.pk, worker="b")
    assert first is not None and second is None
    assert TrainingRun.objects.get(pk=run.pk).worker == "a"


def test_create_enqueues_after_commit(tiny_project, no_broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.training_run_create(project=tiny_project, kind="reward")
    assert no_broker == [run.pk]


def test_dpo_run_registers_a_candidate_with_metrics_and_snapshot(tiny_project):
    judged_pairs(tiny_project, 16)
    run = services.training_run_create(project=tiny_project, kind="dpo")
    assert runner.training_run_execute(run_id=run.pk, worker="test") == RunStatus.SUCCEEDED

    run.refresh_from_db()
    version = run.output_version
    assert (run.step, run.total_steps) == (4, 4)
    assert version.kind == ModelKind.POLICY and version.status == "candidate"
    assert version.parent == active_policy(project_id=tiny_project.pk)  # the base still serves
    assert Path(version.artifact_path).name == "v1"
    assert (Path(version.artifact_path) / "tandem_artifact.json").exists()
    # The held-out prompts' pairs are never trained on: they measure the candidate later.
    trained = set(version.training_data["comparisons"])
    fraction = training_settings_of(tiny_project).evaluation.heldout_fraction
    heldout = {
        c.pk
        for c in Comparison.objects.filter(project=tiny_project)
        if prompt_is_heldout(c.prompt_id, fraction)
    }
    assert trained and heldout and not trained & heldout
    assert len(trained | heldout) == 16
    names = set(MetricPoint.objects.filter(run=run).values_list("name", flat=True))
    assert {"loss", "rewards/accuracy", "learning_rate", "tokens_per_s"} <= names
    assert not runner.run_work_dir(run).exists()  # renamed into the registry


def test_reward_run_registers_a_reward_version(tiny_project):
    judged_pairs(tiny_project, 16)
    run = services.training_run_create(project=tiny_project, kind="reward")
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    version = TrainingRun.objects.get(pk=run.pk).output_version
    assert version.kind == ModelKind.REWARD
    assert "eval_accuracy" in version.metrics


def test_training_without_data_fails_with_a_message(tiny_project):
    run = services.training_run_create(project=tiny_project, kind="dpo")
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.FAILED
    assert "no resolved comparisons" in TrainingRun.objects.get(pk=run.pk).error


def test_generate_run_writes_answers_by_the_rounds_policy(tiny_project):
    for index in range(3):
        PromptFactory(project=tiny_project, text=f"w{index} w{index + 1}")
    round_ = round_open(project=tiny_project)
    run = services.training_run_create(project=tiny_project, kind="generate", round=round_)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    answers = Response.objects.filter(round=round_)
    assert answers.count() == 6
    assert set(answers.values_list("model_version", flat=True)) == {round_.policy_id}
    assert all(a.token_count is not None and a.token_count <= 6 for a in answers)
    assert Comparison.objects.filter(round=round_).count() == 3


def test_cancel_takes_effect_within_a_step(tiny_project, monkeypatch):
    judged_pairs(tiny_project, 16)
    run = services.training_run_create(project=tiny_project, kind="dpo")
    heartbeat = services.training_run_heartbeat

    def heartbeat_then_cancel(*, run_id, step, total_steps):
        if step == 2:
            services.training_run_cancel(run=TrainingRun.objects.get(pk=run_id))
        return heartbeat(run_id=run_id, step=step, total_steps=total_steps)

    monkeypatch.setattr(runner, "training_run_heartbeat", heartbeat_then_cancel)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.CANCELLED
    run.refresh_from_db()
    assert run.step == 2 and run.output_version is None
    assert not ModelVersion.objects.filter(project=tiny_project, number=1).exists()


def test_crashed_run_fails_changes_nothing_and_a_retry_resumes(tiny_project, monkeypatch):
    judged_pairs(tiny_project, 16)
    run = services.training_run_create(project=tiny_project, kind="dpo")
    heartbeat = services.training_run_heartbeat

    def crash_at_step_3(*, run_id, step, total_steps):
        if step == 3:
            raise MemoryError("worker ran out of memory")
        return heartbeat(run_id=run_id, step=step, total_steps=total_steps)

    monkeypatch.setattr(runner, "training_run_heartbeat", crash_at_step_3)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.FAILED
    run.refresh_from_db()
    assert "MemoryError" in run.error and run.output_version is None
    assert active_policy(project_id=tiny_project.pk).number == 0
    assert (runner.run_work_dir(run) / "checkpoint").exists()

    monkeypatch.setattr(runner, "training_run_heartbeat", heartbeat)
    services.training_run_retry(run=run)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.attempt == 2 and run.output_version is not None
    # The resumed attempt logged only the steps after the checkpoint (3 and 4) again.
    assert MetricPoint.objects.filter(run=run, name="loss", split="train").count() == 4


def test_reaper_fails_runs_whose_worker_went_silent(tiny_project):
    run = services.training_run_create(project=tiny_project, kind="dpo")
    services.training_run_claim(run_id=run.pk, worker="gone")
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.training_runs_reap(stale_after_seconds=600) == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "heartbeats" in run.error


def test_cancelled_while_queued_is_never_run(tiny_project):
    run = services.training_run_create(project=tiny_project, kind="dpo")
    services.training_run_cancel(run=run)
    assert runner.training_run_execute(run_id=run.pk) is None
    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_runs_api_for_admins(tiny_project, admin_api, annotator_api):
    url = f"/api/projects/{tiny_project.pk}/runs/"
    created = admin_api.post(url, {"kind": "reward", "config": {"max_steps": 2}}, format="json")
    assert created.status_code == 201
    run_id = created.json()["id"]
    assert admin_api.post(f"/api/runs/{run_id}/cancel/").json()["status"] == "cancelled"
    assert admin_api.post(f"/api/runs/{run_id}/retry/").json()["status"] == "queued"
    assert annotator_api.get(url).status_code == 403
    assert admin_api.post(url, {"kind": "generate", "round": 9}, format="json").status_code == 404
    assert admin_api.post(url, {"kind": "magic"}, format="json").status_code == 400


def test_a_running_run_reports_its_eta_from_the_pace_so_far(tiny_project, admin_api):
    run = services.training_run_create(project=tiny_project, kind="reward")
    now = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        step=10,
        total_steps=40,
        started_at=now - timedelta(seconds=100),
        heartbeat_at=now,
    )
    body = admin_api.get(f"/api/runs/{run.pk}/").json()
    assert body["progress"] == 0.25
    assert body["eta_seconds"] == pytest.approx(300, abs=1)  # 30 steps left at 10 s a step
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)
    assert admin_api.get(f"/api/runs/{run.pk}/").json()["eta_seconds"] is None


def test_promote_through_the_api_keeps_one_active(tiny_project, admin_api):
    base = active_policy(project_id=tiny_project.pk)
    candidate = ModelVersion.objects.create(
        project=tiny_project, kind="policy", number=1, parent=base, base_model=base.base_model
    )
    response = admin_api.post(f"/api/versions/{candidate.pk}/promote/", {"reason": "gates"})
    assert response.status_code == 200 and response.json()["status"] == "active"
    rollback = admin_api.post(f"/api/versions/{base.pk}/promote/", {"reason": "regressed"})
    assert rollback.json()["status"] == "active"
    assert ModelVersion.objects.filter(project=tiny_project, status="active").count() == 1
    assert Round.objects.count() == 0


def test_every_training_algorithm_a_project_may_choose_is_a_run_kind():
    assert set(TrainingAlgorithm.values) <= set(RunKind.values)
    assert set(POLICY_RUN_KINDS) == set(TrainingAlgorithm.values)

"""The closed loop on a tiny model: quota trigger, chain, gates, promotion, next round."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Comparison, Response, Round, RoundStatus
from annotate.quality import wilson_interval
from registry.models import ModelKind, ModelVersion, VersionStatus
from registry.selectors import active_policy
from tests.factories import PromptFactory
from tests.training.helpers import TINY_TRAINING, judged_pairs
from training import pipeline, runner
from training.loop import drive_runs, run_rounds
from training.management.commands import run_loop as run_loop_command
from training.models import RunKind, RunStatus, TrainingRun
from training.project_settings import training_settings_of
from training.simulation import simulate_judging

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]


class AlphabeticalOracle:
    """Prefers the answer that sorts first: decided on every pair of different answers."""

    name = "alphabetical"

    def prefer(self, prompt, first: str, second: str) -> float:
        return 0.5 if first == second else float(first < second)


@pytest.fixture
def loop_project(tiny_project):
    """Gates any tiny candidate passes; half the prompts held out so every check has data."""
    tiny_project.gate_min_win_rate = 0.0
    tiny_project.gate_max_kl = 1e6
    tiny_project.gate_min_heldout_accuracy = 0.0
    tiny_project.round_quota = 1000  # closes when every pair is complete
    tiny_project.training_settings = {
        **tiny_project.training_settings,
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 4},
    }
    tiny_project.save()
    # Six prompts on each side of the split, whatever ids the database hands out (the split
    # hashes them; earlier tests on PostgreSQL move the sequence): both the training steps and
    # the held-out checks always have pairs.
    sides = {True: 0, False: 0}
    index = 0
    while min(sides.values()) < 6:
        prompt = PromptFactory(project=tiny_project, text=f"Say something about topic {index}.")
        index += 1
        side = pipeline.prompt_is_heldout(prompt.pk, 0.5)
        if sides[side] == 6:
            prompt.delete()
        else:
            sides[side] += 1
    return tiny_project


def execute_generation(round_: Round) -> None:
    for run in round_.training_runs.filter(kind=RunKind.GENERATE, status=RunStatus.QUEUED):
        assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED


def test_a_closed_round_runs_to_a_promoted_version_serving_the_next_round(
    loop_project, django_capture_on_commit_callbacks
):
    loop_project.auto_promote = True
    loop_project.save()
    first_round, _ = pipeline.round_start(project=loop_project)
    execute_generation(first_round)
    assert first_round.comparisons.count() == 12

    # The submit that completes the last pair closes the round and queues the reward model.
    with django_capture_on_commit_callbacks(execute=True):
        simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=first_round)
    first_round.refresh_from_db()
    assert first_round.status == RoundStatus.CLOSED
    chain = TrainingRun.objects.filter(round=first_round, chained=True)
    assert list(chain.values_list("kind", flat=True)) == [RunKind.REWARD]

    drive_runs(first_round, log=lambda message: None)

    kinds = list(chain.order_by("id").values_list("kind", "status"))
    assert kinds == [
        (RunKind.REWARD, RunStatus.SUCCEEDED),
        (RunKind.DPO, RunStatus.SUCCEEDED),
        (RunKind.EVALUATE, RunStatus.SUCCEEDED),
    ]
    reward = ModelVersion.objects.get(project=loop_project, kind=ModelKind.REWARD)
    assert reward.status == VersionStatus.ACTIVE
    assert "heldout_accuracy" in reward.metrics
    candidate = chain.get(kind=RunKind.DPO).output_version
    candidate.refresh_from_db()
    assert set(candidate.gate_results["gates"]) == {"win_rate", "kl", "heldout_accuracy"}
    assert candidate.gate_results["passed"] is True
    assert active_policy(project_id=loop_project.pk) == candidate
    first_round.refresh_from_db()
    assert first_round.status == RoundStatus.TRAINED

    # Auto-promotion opened round 2 for the new version and queued its answers.
    second_round = Round.objects.get(project=loop_project, status=RoundStatus.OPEN)
    assert (second_round.number, second_round.policy) == (2, candidate)
    execute_generation(second_round)
    writers = Response.objects.filter(round=second_round).values_list("model_version", flat=True)
    assert set(writers) == {candidate.pk}


def test_evaluation_measures_the_candidate_on_held_out_prompts_only(loop_project):
    first_round, _ = pipeline.round_start(project=loop_project)
    execute_generation(first_round)
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=first_round)
    pipeline.round_finish(round=first_round)
    drive_runs(first_round, log=lambda message: None)

    candidate = ModelVersion.objects.get(project=loop_project, kind=ModelKind.POLICY, number=1)
    fraction = training_settings_of(loop_project).evaluation.heldout_fraction
    trained = set(candidate.training_data["comparisons"])
    heldout = set(candidate.gate_results["heldout_comparisons"])
    assert trained and heldout and not trained & heldout
    for comparison in Comparison.objects.filter(pk__in=heldout):
        assert pipeline.prompt_is_heldout(comparison.prompt_id, fraction)
    samples = runner.evaluation_samples_path(TrainingRun.objects.get(kind=RunKind.EVALUATE))
    assert samples.exists() and samples.read_text().count("\n") == candidate.metrics["gate_prompts"]
    # Without auto-promote the candidate waits for an admin; the base still serves.
    assert candidate.status == VersionStatus.CANDIDATE
    assert active_policy(project_id=loop_project.pk).number == 0


def test_a_failing_gate_keeps_the_parent_serving(loop_project):
    loop_project.auto_promote = True
    loop_project.save()
    round_ = pipeline.round_start(project=loop_project)[0]
    round_.status = RoundStatus.CLOSED
    round_.save()
    candidate = ModelVersion.objects.create(
        project=loop_project,
        kind=ModelKind.POLICY,
        number=1,
        parent=active_policy(project_id=loop_project.pk),
        base_model=loop_project.base_model,
        gate_results=pipeline.gates_check(
            project=loop_project, summary={"win_rate": 0.9, "kl": 2e6, "heldout_accuracy": 0.8}
        ),
    )
    assert candidate.gate_results["gates"]["kl"]["passed"] is False
    assert pipeline.candidate_finish(candidate=candidate, round=round_) is False
    assert active_policy(project_id=loop_project.pk).number == 0
    assert not Round.objects.filter(project=loop_project, status=RoundStatus.OPEN).exists()
    round_.refresh_from_db()
    assert round_.status == RoundStatus.TRAINED


def test_gates_compare_each_measure_with_the_project_thresholds(project):
    project.gate_min_win_rate, project.gate_max_kl, project.gate_min_heldout_accuracy = 0.5, 5, 0.6
    passing = {"win_rate": 0.5, "kl": 5.0, "heldout_accuracy": 0.6}
    assert pipeline.gates_check(project=project, summary=passing)["passed"] is True
    for name, bad in (("win_rate", 0.49), ("kl", 5.01), ("heldout_accuracy", 0.59)):
        verdict = pipeline.gates_check(project=project, summary={**passing, name: bad})
        assert verdict["passed"] is False and verdict["gates"][name]["passed"] is False
    no_judge = pipeline.gates_check(project=project, summary={**passing, "win_rate": None})
    assert no_judge["passed"] is False  # a gate that could not be measured does not pass
    unjudged = {**passing, "heldout_accuracy": None}
    no_heldout = pipeline.gates_check(project=project, summary=unjudged)
    assert no_heldout["passed"] is True and "note" in no_heldout["gates"]["heldout_accuracy"]


def test_the_held_out_split_is_stable_and_near_its_fraction():
    ids = range(1, 20_001)
    held = [i for i in ids if pipeline.prompt_is_heldout(i, 0.2)]
    assert 0.19 < len(held) / 20_000 < 0.21
    assert held == [i for i in ids if pipeline.prompt_is_heldout(i, 0.2)]
    assert not any(pipeline.prompt_is_heldout(i, 0.0) for i in ids)


def test_quota_trigger_closes_the_round_once(loop_project):
    round_, _ = pipeline.round_start(project=loop_project)
    execute_generation(round_)
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=round_, limit=11)
    assert pipeline.round_close_if_complete(round_id=round_.pk) is None  # 11 of 12 complete
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=round_)
    first = pipeline.round_close_if_complete(round_id=round_.pk)
    second = pipeline.round_close_if_complete(round_id=round_.pk)
    assert first is not None and first.kind == RunKind.REWARD and first.chained
    assert second is None
    assert pipeline.rounds_check_triggers() == []
    assert TrainingRun.objects.filter(kind=RunKind.REWARD).count() == 1


def test_a_round_far_from_its_quota_is_not_recounted_after_every_submit(
    loop_project, monkeypatch, django_assert_num_queries
):
    monkeypatch.setattr(pipeline, "QUOTA_RECOUNT_MARGIN", 2)  # far: more than 2 pairs short
    round_, _ = pipeline.round_start(project=loop_project)
    execute_generation(round_)
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=round_, limit=5)
    with django_assert_num_queries(1):  # counted: 7 of 12 pairs short
        assert pipeline.round_close_if_complete(round_id=round_.pk, after_submit=True) is None
    with django_assert_num_queries(0):  # far from the quota and counted just now
        assert pipeline.round_close_if_complete(round_id=round_.pk, after_submit=True) is None
    with django_assert_num_queries(1):  # beat always counts
        assert pipeline.round_close_if_complete(round_id=round_.pk) is None
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=round_, limit=5)
    monkeypatch.setattr(pipeline, "QUOTA_RECOUNT_SECONDS", 0.0)  # the last count is stale
    with django_assert_num_queries(1):  # 2 short: near the quota from now on
        assert pipeline.round_close_if_complete(round_id=round_.pk, after_submit=True) is None
    monkeypatch.setattr(pipeline, "QUOTA_RECOUNT_SECONDS", 60.0)
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=round_)
    assert pipeline.round_close_if_complete(round_id=round_.pk, after_submit=True) is not None


def test_quota_counts_complete_pairs(loop_project):
    loop_project.round_quota = 3
    loop_project.save()
    round_, _ = pipeline.round_start(project=loop_project)
    execute_generation(round_)
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=round_, limit=2)
    assert pipeline.rounds_check_triggers() == []
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), round=round_, limit=1)
    assert pipeline.rounds_check_triggers() == [round_.pk]


def test_admins_open_and_close_rounds_through_the_api(loop_project, admin_api, annotator_api):
    opened = admin_api.post(f"/api/projects/{loop_project.pk}/rounds/")
    assert opened.status_code == 201, opened.content
    generation = TrainingRun.objects.get(kind=RunKind.GENERATE)
    assert generation.round.number == opened.json()["number"]
    execute_generation(generation.round)
    simulate_judging(project=loop_project, oracle=AlphabeticalOracle(), limit=3)

    close_url = f"/api/projects/{loop_project.pk}/rounds/{opened.json()['number']}/close/"
    assert annotator_api.post(close_url).status_code == 403
    closed = admin_api.post(close_url)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    reward = TrainingRun.objects.get(kind=RunKind.REWARD)
    assert reward.chained and reward.round == generation.round
    again = admin_api.post(close_url)
    assert again.status_code == 409


def test_an_evaluate_run_can_be_started_by_hand(loop_project, admin_api):
    url = f"/api/projects/{loop_project.pk}/runs/"
    refused = admin_api.post(url, {"kind": "evaluate"}, format="json")
    assert refused.status_code == 400
    assert "trained policy version" in refused.json()["detail"]
    base = active_policy(project_id=loop_project.pk)
    refused = admin_api.post(url, {"kind": "evaluate", "version": base.pk}, format="json")
    assert refused.status_code == 400  # the base model has nothing to evaluate against itself

    judged_pairs(loop_project, 12)
    dpo = TrainingRun.objects.create(project=loop_project, kind=RunKind.DPO)
    assert runner.training_run_execute(run_id=dpo.pk) == RunStatus.SUCCEEDED
    version = TrainingRun.objects.get(pk=dpo.pk).output_version
    started = admin_api.post(url, {"kind": "evaluate", "version": version.pk}, format="json")
    assert started.status_code == 201, started.content
    assert started.json()["input_version"] == version.pk and not started.json()["chained"]
    assert runner.training_run_execute(run_id=started.json()["id"]) == RunStatus.SUCCEEDED
    version.refresh_from_db()
    assert version.gate_results["gates"]["win_rate"]["value"] is None  # no reward model yet
    assert version.gate_results["passed"] is False
    assert version.status == VersionStatus.CANDIDATE


def test_run_loop_prints_a_table_and_round_two_is_written_by_round_ones_promotion(
    loop_project, capsys, monkeypatch
):
    # A judge that decides every pair of different answers: the default "shorter" oracle ties
    # the tiny model's equally long answers, and a round of ties leaves DPO nothing to train on.
    monkeypatch.setattr(
        run_loop_command, "oracle_from_spec", lambda spec, **_: AlphabeticalOracle()
    )
    call_command("run_loop", project=loop_project.slug, rounds=2, annotators=1)
    table = capsys.readouterr().out
    assert "oracle win" in table and table.count("\n") >= 3
    first, second = Round.objects.filter(project=loop_project).order_by("number")[:2]
    promoted = ModelVersion.objects.get(project=loop_project, kind=ModelKind.POLICY, number=1)
    assert first.policy.number == 0 and second.policy == promoted
    writers = set(Response.objects.filter(round=second).values_list("model_version", flat=True))
    assert writers == {promoted.pk}
    assert active_policy(project_id=loop_project.pk).number == 2


def test_run_rounds_reports_the_stages(loop_project):
    (report,) = run_rounds(project=loop_project, rounds=1, oracle=AlphabeticalOracle())
    assert report.error == ""
    assert report.promoted and report.candidate == 1 and report.written_by == 0
    assert {"generate", "judge", "reward", "policy", "evaluate", "total"} <= set(report.seconds)
    assert report.comparisons == 12 and report.judgments == 12
    assert 0.0 <= report.oracle_win_rate <= 1.0


def test_run_loop_rejects_bad_arguments(loop_project):
    with pytest.raises(CommandError) as missing:
        call_command("run_loop", project="no-such-project")
    assert missing.value.returncode == 2
    with pytest.raises(CommandError) as bad_oracle:
        call_command("run_loop", project=loop_project.slug, oracle="psychic")
    assert bad_oracle.value.returncode == 2 and "Unknown oracle" in str(bad_oracle.value)


TINY_ONLINE_RL = {
    "max_steps": 2,
    "prompts_per_iteration": 2,
    "max_new_tokens": 4,
    "batch_size": 2,
    "update_epochs": 1,
    "max_length": 32,
    "max_prompt_length": 16,
    "precision": "fp32",
}


@pytest.mark.parametrize("algorithm", ["ppo", "rloo"])
def test_an_online_rl_project_trains_against_the_rounds_reward_model(loop_project, algorithm):
    loop_project.training_algorithm = algorithm
    extra = {"samples_per_prompt": 2} if algorithm == "rloo" else {}
    loop_project.training_settings = {
        **loop_project.training_settings,
        algorithm: {**TINY_ONLINE_RL, **extra},
    }
    loop_project.save()
    (report,) = run_rounds(project=loop_project, rounds=1, oracle=AlphabeticalOracle())
    assert report.error == ""
    policy_run = TrainingRun.objects.get(kind=algorithm)
    reward = ModelVersion.objects.get(project=loop_project, kind=ModelKind.REWARD)
    assert policy_run.status == RunStatus.SUCCEEDED and policy_run.input_version == reward
    candidate = policy_run.output_version
    assert candidate.training_data["reward_model"] == reward.number
    assert report.promoted and active_policy(project_id=loop_project.pk) == candidate


def test_each_round_samples_fresh_answers_even_from_the_same_policy(loop_project):
    first, _ = pipeline.round_start(project=loop_project)
    execute_generation(first)
    pipeline.round_finish(round=first)  # closed without training: the base still serves
    second, _ = pipeline.round_start(project=loop_project)
    execute_generation(second)
    assert first.policy == second.policy
    texts = {
        number: sorted(Response.objects.filter(round__number=number).values_list("text", flat=True))
        for number in (1, 2)
    }
    assert texts[1] != texts[2]


def test_share_gates_carry_their_sample_size_and_a_wilson_interval(project):
    project.gate_min_win_rate, project.gate_min_heldout_accuracy = 0.5, 0.5
    few = {"win_rate": 0.8, "kl": 1.0, "heldout_accuracy": 1 / 3, "prompts": 6.0,
           "heldout_pairs": 6.0}  # fmt: skip
    gates = pipeline.gates_check(project=project, summary=few)["gates"]
    accuracy = gates["heldout_accuracy"]
    assert accuracy["n"] == 6
    assert accuracy["low"] == pytest.approx(0.0968, abs=1e-3)  # Wilson, 2 of 6
    assert accuracy["high"] == pytest.approx(0.7000, abs=1e-3)
    assert accuracy["conclusive"] is False  # 0.5 lies inside: six pairs cannot tell
    many = {**few, "heldout_accuracy": 0.8, "heldout_pairs": 200.0, "prompts": 200.0}
    gates = pipeline.gates_check(project=project, summary=many)["gates"]
    assert gates["heldout_accuracy"]["conclusive"] is True
    assert gates["heldout_accuracy"]["low"] > 0.5
    assert "n" not in gates["kl"]  # a mean, not a share
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


def test_run_rounds_with_written_answers_runs_sft_before_the_policy_step(loop_project):
    from pathlib import Path

    from annotate.models import Demonstration
    from training.engine.config import load_config

    loop_project.demonstration_share = 0.5
    loop_project.training_settings = {**loop_project.training_settings, "sft": TINY_TRAINING}
    loop_project.save(update_fields=["demonstration_share", "training_settings"])

    (report,) = run_rounds(project=loop_project, rounds=1, oracle=AlphabeticalOracle())

    assert report.error == ""
    written = Demonstration.objects.filter(project=loop_project)
    assert written.exists()
    for demonstration in written.select_related("comparison__response_a", "edited_from"):
        # The simulated writer keeps the better answer shown (the alphabetical oracle has no
        # guideline to rewrite by), so it is one of the two and marked as edited from it.
        shown = {demonstration.comparison.response_a_id, demonstration.comparison.response_b_id}
        assert demonstration.edited_from_id in shown
        assert demonstration.text == demonstration.edited_from.text
    runs = list(
        TrainingRun.objects.filter(project=loop_project, chained=True)
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert runs[:3] == [RunKind.SFT, RunKind.REWARD, RunKind.DPO]
    sft = TrainingRun.objects.get(project=loop_project, kind=RunKind.SFT).output_version
    dpo = TrainingRun.objects.get(project=loop_project, kind=RunKind.DPO).output_version
    # The policy step started from the SFT adapter; its gates still compare with what serves.
    assert load_config(Path(dpo.artifact_path)).init_adapter == sft.artifact_path
    assert dpo.parent.number == 0 and sft.parent.number == 0

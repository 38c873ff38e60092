"""A whole round in the browser on a tiny model: two annotators judge every pair with the keys,
the round closes itself, the chain trains, the admin promotes and opens round 2, and round 2's
pairs come from the promoted version. Along the way each annotator reads their own history and
the admin reviews one pair with both judgments on it.

The chain's runs are carried out by the test itself (training.loop.drive_runs), between browser
steps, in place of a worker: what is under test is what the people see and do."""

from __future__ import annotations

import pytest

from annotate.models import Assignment, Comparison, Judgment, MemberRole, Round, RoundStatus
from annotate.services import membership_set
from registry.models import ModelKind, ModelVersion, VersionStatus
from registry.selectors import active_policy
from tests.e2e.conftest import alphabetical_key, judge_until_empty, login
from tests.engine.tiny import save_tiny_llama
from tests.factories import PromptFactory, UserFactory
from tests.training.helpers import TINY_GENERATION, TINY_TRAINING
from training import pipeline, runner, services
from training.loop import drive_runs
from training.models import RunKind, RunStatus, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

MIN_VIEW_MS = 250
PROMPTS_EACH_SIDE = 2  # of the held-out split: the chain has pairs to train and to check on


@pytest.fixture
def queued_runs(monkeypatch) -> list[int]:
    """Runs are queued, not sent to a broker: the test carries them out."""
    queued: list[int] = []
    monkeypatch.setattr(services, "enqueue_run", queued.append)
    return queued


@pytest.fixture
def round_project(project, tmp_path, settings, queued_runs):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    base = save_tiny_llama(tmp_path / "tiny-llama")
    project.base_model = project.reward_backbone = str(base)
    project.training_settings = {
        "dpo": TINY_TRAINING,
        "reward": TINY_TRAINING,
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 4},
    }
    project.generation_settings = dict(TINY_GENERATION)
    project.required_annotations = 2
    project.round_quota = 2 * PROMPTS_EACH_SIDE  # closes when every pair has both judgments
    project.min_view_ms = MIN_VIEW_MS
    project.gate_min_win_rate = 0.0
    project.gate_max_kl = 1e6
    project.gate_min_heldout_accuracy = 0.0
    project.auto_promote = False  # the admin promotes by hand
    project.save()
    policy = active_policy(project_id=project.pk)
    policy.base_model = str(base)
    policy.save()
    sides = {True: 0, False: 0}
    index = 0
    while min(sides.values()) < PROMPTS_EACH_SIDE:
        prompt = PromptFactory(project=project, text=f"Name a fruit, number {index}.")
        index += 1
        side = pipeline.prompt_is_heldout(prompt.pk, 0.5)
        if sides[side] == PROMPTS_EACH_SIDE:
            prompt.delete()
        else:
            sides[side] += 1
    return project


def generate(round_: Round) -> None:
    for run in round_.training_runs.filter(kind=RunKind.GENERATE, status=RunStatus.QUEUED):
        assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED


def shown_assignment(page) -> int:
    return int(page.locator("main.pair").get_attribute("data-assignment"))


def wait_for(condition, *, page, timeout_ms: int = 15_000) -> None:
    for _ in range(timeout_ms // 100):
        if condition():
            return
        page.wait_for_timeout(100)
    raise AssertionError("the condition never held")


def test_two_annotators_a_chain_a_promotion_and_round_two(
    browser, live_server, round_project, e2e_admin, screenshot_dir
):
    project = round_project
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    for user in (alice, bob):
        membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
    first_round, _ = pipeline.round_start(project=project)
    generate(first_round)
    pairs = first_round.comparisons.count()
    assert pairs == 2 * PROMPTS_EACH_SIDE

    contexts = {
        name: browser.new_context(viewport={"width": 1280, "height": 860}, base_url=live_server.url)
        for name in ("alice", "bob", "boss")
    }
    pages = {name: context.new_page() for name, context in contexts.items()}
    for page in pages.values():
        page.set_default_timeout(15_000)
    try:
        for name in ("alice", "bob"):
            login(pages[name], name, then=f"/app/annotate/{project.pk}")
        # Both prefer the answer that sorts first, whatever side it is on: every pair resolves.
        assert judge_until_empty(pages["alice"], alphabetical_key, MIN_VIEW_MS) == pairs
        assert judge_until_empty(pages["bob"], alphabetical_key, MIN_VIEW_MS) == pairs

        # The submit that completed the last pair closed the round and queued the chain.
        first_round.refresh_from_db()
        assert first_round.status == RoundStatus.CLOSED
        assert Judgment.objects.filter(comparison__round=first_round).count() == 2 * pairs
        drive_runs(first_round, log=lambda message: None)
        chain = TrainingRun.objects.filter(round=first_round, chained=True).order_by("id")
        assert list(chain.values_list("kind", "status")) == [
            (RunKind.REWARD, RunStatus.SUCCEEDED),
            (RunKind.DPO, RunStatus.SUCCEEDED),
            (RunKind.EVALUATE, RunStatus.SUCCEEDED),
        ]
        candidate = chain.get(kind=RunKind.DPO).output_version
        assert candidate.status == VersionStatus.CANDIDATE

        # Each annotator's own record: every pair, all in round 1.
        alice_page = pages["alice"]
        alice_page.get_by_role("link", name="Your judgments").click()
        table = alice_page.get_by_role("table", name="Latest judgments")
        table.wait_for()
        assert table.locator("tbody tr").count() == pairs
        assert f"round 1: {pairs}" in alice_page.get_by_label("Summary").inner_text()
        alice_page.screenshot(path=str(screenshot_dir / "history.png"), full_page=True)

        # The admin reviews one pair: both judgments, each in a/b terms.
        boss = pages["boss"]
        comparison = Comparison.objects.filter(round=first_round).order_by("id").first()
        login(boss, "boss", then=f"/app/admin/{project.pk}/pairs")
        boss.get_by_role("link", name=f"#{comparison.pk}").click()
        judgments = boss.get_by_role("table", name="Judgments")
        judgments.wait_for()
        assert judgments.locator("tbody tr").count() == 2
        assert {"alice", "bob"} <= set(judgments.inner_text().split())
        boss.screenshot(path=str(screenshot_dir / "pair-review.png"), full_page=True)

        # Promote by hand, confirm, and open round 2 from the same row.
        boss.get_by_role("link", name="Training & versions").click()
        row = boss.get_by_test_id(f"version-{candidate.pk}")
        row.get_by_role("button", name="Promote").click()
        row.get_by_role("button", name=f"Confirm: promote v{candidate.number}").click()
        row.get_by_role("button", name=f"Open the next round with v{candidate.number}").click()
        wait_for(lambda: Round.objects.filter(project=project, number=2).exists(), page=boss)
        candidate.refresh_from_db()
        assert candidate.status == VersionStatus.ACTIVE
        second_round = Round.objects.get(project=project, number=2)
        assert second_round.policy_id == candidate.pk
        generate(second_round)
        boss.get_by_role("link", name="Rounds").click()
        boss.get_by_role("region", name="Per-round charts").wait_for()
        boss.wait_for_timeout(500)  # the charts draw their first frame
        boss.screenshot(path=str(screenshot_dir / "rounds.png"), full_page=True)

        # Round 2's pairs, written by the promoted version, reach the annotator on a reload.
        alice_page.goto(f"/app/annotate/{project.pk}")
        alice_page.locator("main.pair").wait_for()
        lease = Assignment.objects.select_related("comparison").get(pk=shown_assignment(alice_page))
        assert lease.comparison.round_id == second_round.pk
        writers = {lease.comparison.response_a.model_version_id}
        writers.add(lease.comparison.response_b.model_version_id)
        assert writers == {candidate.pk}
        reward = ModelVersion.objects.get(project=project, kind=ModelKind.REWARD)
        assert reward.status == VersionStatus.ACTIVE
    finally:
        for context in contexts.values():
            context.close()

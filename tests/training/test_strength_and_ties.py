"""What annotators say reaches the loss: strength as the reward model's margin and DPO's weight,
ties as the reward model's half target and never as a DPO winner, "both bad" nowhere.

The losses are wrapped to record the batches the real training loops give them, through the
runner (the same typed read of resolved pairs the export uses).
"""

from __future__ import annotations

import pytest

from annotate.models import Comparison
from annotate.services import assignment_lease_next, judgment_submit
from tests.annotate.test_judging import annotators
from tests.factories import PromptFactory, ResponseFactory
from training import runner, services
from training.engine import dpo, reward
from training.models import RunStatus

pytestmark = pytest.mark.django_db

# choice for the "good" side (or tie / both_bad), and the strength given
VERDICTS = [
    ("good", "strong"),
    ("good", "slight"),
    ("good", None),
    ("tie", None),
    ("both_bad", None),
    ("good", "clear"),
]


def _judged_with_verdicts(project) -> None:
    (judge,) = annotators(project, 1)
    for index in range(len(VERDICTS)):
        prompt = PromptFactory(project=project, text=f"Question {index}?")
        good, bad = (
            ResponseFactory(prompt=prompt, text=text, source="external", model_version=None)
            for text in ("good yes", "bad no")
        )
        Comparison.objects.create(project=project, prompt=prompt, response_a=good, response_b=bad)
    verdicts = iter(VERDICTS)
    while (lease := assignment_lease_next(project=project, annotator=judge)) is not None:
        side, strength = next(verdicts)
        choice = side
        if side == "good":
            choice = "left" if lease.a_on_left else "right"
        judgment_submit(assignment_id=lease.pk, annotator=judge, choice=choice, strength=strength)


def _record_calls(monkeypatch, module, name: str) -> list[dict]:
    calls: list[dict] = []
    real = getattr(module, name)

    def recording(*args, **kwargs):
        calls.append({k: v.detach().clone() for k, v in kwargs.items() if hasattr(v, "detach")})
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


def _train(project, kind: str) -> None:
    run = services.training_run_create(project=project, kind=kind)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED


@pytest.fixture
def judged(tiny_project):
    tiny_project.training_settings = {
        **tiny_project.training_settings,
        "evaluation": {"heldout_fraction": 0.0},
        "reward": {**tiny_project.training_settings["reward"], "eval_every": 1000},
        "dpo": {**tiny_project.training_settings["dpo"], "eval_every": 1000},
    }
    tiny_project.save()
    _judged_with_verdicts(tiny_project)
    return tiny_project


def test_strength_is_the_reward_models_margin_and_a_tie_its_half_target(judged, monkeypatch):
    calls = _record_calls(monkeypatch, reward, "bradley_terry_loss")
    _train(judged, "reward")
    calls = [call for call in calls if "margin" in call]  # training steps, not the evaluation
    seen = {
        (round(float(m), 3), float(t))
        for call in calls
        for m, t in zip(call["margin"], call["target"], strict=True)
    }
    # RewardConfig's defaults: slight 0, clear 0.5, strong 1; no strength: no margin.
    assert seen == {(1.0, 1.0), (0.0, 1.0), (0.5, 1.0), (0.0, 0.5)}
    rows, _ = runner.preference_rows(judged)
    assert len(rows) == 5  # "both bad" names no winner: it trains no pairwise loss


def test_strength_weighs_a_dpo_pair_and_ties_are_left_out(judged, monkeypatch):
    calls = _record_calls(monkeypatch, dpo, "dpo_loss")
    _train(judged, "dpo")
    calls = [call for call in calls if "weight" in call]  # training steps, not the evaluation
    weights = sorted({round(float(w), 3) for call in calls for w in call["weight"]})
    # DPOConfig's defaults: slight 0.5, clear 1, strong 1.5; no strength: 1 (agreement 1 each).
    assert weights == [0.5, 1.0, 1.5]
    assert {len(call["weight"]) for call in calls} <= {4, 3, 2, 1}
    rows, _ = runner.preference_rows(judged)
    assert len(dpo.decided_rows(rows)) == 4  # the tie carries no direction

"""Active pair selection: the pairs the reward model is least sure of go to annotators first,
held-out prompts and a random share keep random pairs, and every choice is stored."""

from __future__ import annotations

import math

import pytest
import torch

from annotate.models import Comparison, Response
from annotate.services import round_open
from registry.models import ModelKind
from tests.factories import PromptFactory
from tests.training.helpers import judged_pairs
from training import runner, services
from training.engine import ensemble
from training.engine.ppo import RewardModelScore
from training.models import RunStatus, TrainingRun
from training.pairing import (
    Answer,
    PosteriorOfAnswers,
    binary_entropy,
    choose_pairs,
    expected_information,
)
from training.project_settings import PairingSettings, training_settings_update

UNCERTAINTY = PairingSettings(strategy="uncertainty", answers_per_prompt=4, random_share=0.0)


def _answers(prompt_id: int, texts: list[str]) -> list[Answer]:
    return [Answer(prompt_id * 10 + index, text) for index, text in enumerate(texts)]


def test_the_pair_with_the_closest_rewards_is_chosen_and_its_choice_stored():
    answers = {1: _answers(1, ["w", "x", "y", "z"])}
    scores = {10: 3.0, 11: -1.0, 12: 0.9, 13: 1.2}  # 12 and 13 are 0.3 apart, the closest
    (pair,) = choose_pairs(
        answers, settings=UNCERTAINTY, scores=scores, reward_version=3, heldout=set(), seed=0
    )
    assert (pair.response_a_id, pair.response_b_id) == (12, 13)
    selection = pair.selection
    assert selection["strategy"] == "uncertainty" and selection["k"] == 4
    assert selection["scores"] == {"10": 3.0, "11": -1.0, "12": 0.9, "13": 1.2}
    assert selection["reward_version"] == 3
    assert selection["margin"] == pytest.approx(-0.3)
    assert selection["p_a"] == pytest.approx(1 / (1 + math.exp(0.3)))
    assert pair.priority == pytest.approx(binary_entropy(selection["p_a"]))


def test_most_uncertain_pairs_are_served_first_and_random_ones_interleave():
    answers = {p: _answers(p, ["a", "b", "c"]) for p in range(1, 41)}
    scores = {
        answer.response_id: p * (index + 1) * 0.2  # prompt p's closest pair is 0.2 * p apart
        for p, many in answers.items()
        for index, answer in enumerate(many)
    }
    settings = PairingSettings(strategy="uncertainty", random_share=0.5)
    planned = choose_pairs(
        answers, settings=settings, scores=scores, reward_version=1, heldout={1, 2}, seed=7
    )
    by_prompt = {pair.prompt_id: pair for pair in planned}
    assert by_prompt[1].selection["strategy"] == by_prompt[2].selection["strategy"] == "random"
    assert "held-out" in by_prompt[1].selection["why"]
    uncertain = [p for p in planned if p.selection["strategy"] == "uncertainty"]
    shared = [p for p in planned if "random share" in p.selection.get("why", "")]
    assert 8 <= len(shared) <= 30 and len(uncertain) + len(shared) == 38
    # A smaller margin is a higher priority.
    ordered = sorted(uncertain, key=lambda p: -p.priority)
    assert [p.prompt_id for p in ordered] == sorted(p.prompt_id for p in uncertain)
    # Random pairs take priorities the uncertain ones have: served among them, not after.
    assert {p.priority for p in planned if p.selection["strategy"] == "random"} <= {
        p.priority for p in uncertain
    }


def test_without_a_reward_model_or_two_distinct_answers_the_choice_says_why():
    answers = {1: _answers(1, ["same", " same ", "other"]), 2: _answers(2, ["one", "one"])}
    planned = choose_pairs(
        answers, settings=UNCERTAINTY, scores=None, reward_version=None, heldout=set(), seed=0
    )
    assert [(p.prompt_id, p.selection["why"], p.selection["k"]) for p in planned] == [
        (1, "no reward model yet", 2)  # the repeated text counts once; prompt 2 has no pair
    ]
    assert {planned[0].response_a_id, planned[0].response_b_id} == {10, 12}


def test_random_pairing_is_seeded_and_takes_any_two_distinct_answers():
    answers = {p: _answers(p, ["a", "b", "c", "d"]) for p in range(1, 6)}

    def plan() -> list:
        return choose_pairs(
            answers, settings=PairingSettings(), scores=None, reward_version=None, heldout=set(),
            seed=5,
        )  # fmt: skip

    first, again = plan(), plan()
    assert first == again
    assert all(p.selection == {"strategy": "random", "pairing": "random", "k": 4} for p in first)
    assert all(p.response_a_id < p.response_b_id for p in first)


def _use_pairing(project, pairing: dict) -> None:
    """The project chooses pairs by `pairing`, with no held-out split."""
    training_settings_update(
        project=project,
        values={
            **project.training_settings,
            "pairing": pairing,
            "evaluation": {"heldout_fraction": 0.0},
        },
    )


def _trained_reward(project):
    """A reward model trained on the project's judgments, as the chain trains it."""
    reward_run = services.training_run_create(project=project, kind="reward")
    assert runner.training_run_execute(run_id=reward_run.pk) == RunStatus.SUCCEEDED
    return TrainingRun.objects.get(pk=reward_run.pk).output_version


def _generated_round(project):
    """A round on four fresh prompts whose answers are written (hot, so they differ) and paired."""
    project.generation_settings = {**project.generation_settings, "temperature": 1.5}
    project.save()
    for index in range(4):
        PromptFactory(project=project, text=f"w{index} w{index + 3}")
    round_ = round_open(project=project)
    run = services.training_run_create(project=project, kind="generate", round=round_)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    return round_


@pytest.mark.django_db
def test_a_round_under_uncertainty_writes_k_answers_and_pairs_by_the_reward_model(tiny_project):
    judged_pairs(tiny_project, 8)
    reward = _trained_reward(tiny_project)
    assert reward.kind == ModelKind.REWARD
    _use_pairing(
        tiny_project, {"strategy": "uncertainty", "answers_per_prompt": 4, "random_share": 0.0}
    )
    round_ = _generated_round(tiny_project)

    every_prompt = tiny_project.prompts.count()  # the judged pairs' prompts are answered too
    assert Response.objects.filter(round=round_).count() == 4 * every_prompt
    scorer = RewardModelScore(
        reward.artifact_path, device=runner_device(), precision="auto", batch_size=16,
        cache_dir=None,
    )  # fmt: skip
    comparisons = Comparison.objects.filter(round=round_).select_related("prompt")
    assert comparisons.count() >= 1
    for comparison in comparisons:
        selection = comparison.selection
        assert selection["strategy"] == "uncertainty"
        assert selection["reward_version"] == reward.number
        ids = [int(key) for key in selection["scores"]]
        texts = dict(Response.objects.filter(pk__in=ids).values_list("pk", "text"))
        fresh = scorer([comparison.prompt.text] * len(ids), [texts[i] for i in ids])
        assert fresh == pytest.approx(list(selection["scores"].values()), abs=1e-2)  # bf16
        margins = [
            abs(selection["scores"][str(x)] - selection["scores"][str(y)])
            for x in ids
            for y in ids
            if x < y
        ]
        chosen = [str(comparison.response_a_id), str(comparison.response_b_id)]
        assert abs(
            selection["scores"][chosen[0]] - selection["scores"][chosen[1]]
        ) == pytest.approx(min(margins))


DISAGREEMENT = PairingSettings(strategy="disagreement", random_share=0.0)


def test_disagreement_asks_about_the_pair_the_heads_split_on_not_the_closest():
    answers = {1: _answers(1, ["w", "x", "y"])}
    scores = {10: 0.0, 11: 0.05, 12: 2.0}  # 10 and 11 are closest
    heads = {10: [0.0, 0.0, 0.0], 11: [0.05, 0.05, 0.05], 12: [-3.0, 3.0, 0.5]}
    (pair,) = choose_pairs(
        answers, settings=DISAGREEMENT, scores=scores, reward_version=2, heldout=set(), seed=0,
        head_scores=heads,
    )  # fmt: skip
    assert (pair.response_a_id, pair.response_b_id) in ((10, 12), (11, 12))
    selection = pair.selection
    assert selection["strategy"] == "disagreement"
    assert selection["head_scores"]["12"] == [-3.0, 3.0, 0.5]
    information = expected_information(heads[pair.response_a_id], heads[pair.response_b_id])
    assert selection["information"] == pytest.approx(information) and information > 0.2
    assert pair.priority == pytest.approx(information)
    # Every head calls 10 against 11 a near coin flip: nothing to learn there.
    assert expected_information(heads[10], heads[11]) < 1e-3


def test_disagreement_without_heads_falls_back_to_the_closest_rewards_and_says_so():
    answers = {1: _answers(1, ["w", "x", "y"])}
    (pair,) = choose_pairs(
        answers, settings=DISAGREEMENT, scores={10: 0.0, 11: 0.05, 12: 2.0}, reward_version=2,
        heldout=set(), seed=0, head_scores=None,
    )  # fmt: skip
    assert (pair.response_a_id, pair.response_b_id) == (10, 11)
    assert pair.selection["strategy"] == "uncertainty"
    assert "no bootstrap heads" in pair.selection["why"]


@pytest.mark.django_db
def test_a_round_under_disagreement_trains_heads_and_pairs_by_them(tiny_project):
    judged_pairs(tiny_project, 8)  # on both sides of the default held-out split
    _use_pairing(
        tiny_project, {"strategy": "disagreement", "ensemble_heads": 4, "random_share": 0.0}
    )
    heads = ensemble.load_heads(_trained_reward(tiny_project).artifact_path)
    assert heads is not None and heads.shape[0] == 4
    round_ = _generated_round(tiny_project)

    comparisons = Comparison.objects.filter(round=round_)
    assert comparisons.count() >= 1
    for comparison in comparisons:
        selection = comparison.selection
        assert selection["strategy"] == "disagreement" and selection["k"] >= 2
        by_head = selection["head_scores"]
        assert all(len(scores) == 4 for scores in by_head.values())
        chosen = expected_information(
            by_head[str(comparison.response_a_id)], by_head[str(comparison.response_b_id)]
        )
        every = [
            expected_information(by_head[x], by_head[y]) for x in by_head for y in by_head if x < y
        ]
        assert chosen == pytest.approx(max(every))


INFORMATION = PairingSettings(strategy="information", random_share=0.0)


def _posterior(features: dict[int, list[float]], mode: list[float]) -> PosteriorOfAnswers:
    """Answers under a posterior with identity covariance: whitened features are features."""
    ids = sorted(features)
    head = ensemble.HeadPosterior(mode=torch.tensor(mode), factor=torch.eye(len(mode)))
    return PosteriorOfAnswers(ids, head.answers(torch.tensor([features[i] for i in ids])))


def test_information_chooses_across_prompts_and_does_not_ask_the_same_thing_twice():
    # Prompts 1 and 2 offer the same comparison (along axis 0); prompt 3 a slightly less
    # doubtful one along axis 1. Alone, 1 and 2 rank above 3; given 1's label, 2 teaches less.
    features = {
        10: [0.0, 0.0], 11: [3.0, 0.0], 20: [0.0, 0.0], 21: [3.0, 0.0], 30: [0.0, 0.0],
        31: [0.0, 2.8], 32: [0.0, 0.1],
    }  # fmt: skip
    answers = {1: _answers(1, ["a", "b"]), 2: _answers(2, ["c", "d"]), 3: _answers(3, "efg")}
    scores = {i: 0.0 for i in features}
    planned = choose_pairs(
        answers, settings=INFORMATION, scores=scores, reward_version=7, heldout=set(), seed=0,
        posterior=_posterior(features, [0.0, 0.0]),
    )  # fmt: skip
    by_prompt = {pair.prompt_id: pair for pair in planned}
    assert set(by_prompt) == {1, 2, 3}  # one pair a prompt
    assert (by_prompt[3].response_a_id, by_prompt[3].response_b_id) == (30, 31)
    picks = sorted(planned, key=lambda pair: pair.selection["pick"])
    assert [pair.prompt_id for pair in picks] in ([1, 3, 2], [2, 3, 1])
    alone = float(ensemble.pair_information(torch.tensor([0.0]), torch.tensor([9.0]))[0])
    assert picks[0].selection["information"] == pytest.approx(alone)
    assert picks[2].selection["information"] < alone  # given the first pick, it teaches less
    assert [pair.priority for pair in picks] == sorted({pair.priority for pair in picks})[::-1]
    for pair in planned:
        selection = pair.selection
        assert selection["strategy"] == "information" and selection["reward_version"] == 7
        assert selection["value"] > 0 and selection["of"] == 3
    assert picks[0].selection["posterior_sd"] == pytest.approx(3.0)


def test_information_prefers_a_pair_like_the_others_to_an_outlier():
    # Prompts 1-8 compare along axis 0; prompt 9 offers a far larger difference along axis 1,
    # which no other pair shares: its own margin is the least known, yet its label says
    # nothing about the rest. The pairs like the others go first.
    features = {10 * p + i: [3.0 * i, 0.0] for p in range(1, 9) for i in range(2)}
    features |= {90: [0.0, 0.0], 91: [0.0, 6.0]}
    answers = {p: _answers(p, ["a", "b"]) for p in range(1, 10)}
    planned = choose_pairs(
        answers, settings=INFORMATION, scores={i: 0.0 for i in features}, reward_version=1,
        heldout=set(), seed=0, posterior=_posterior(features, [0.0, 0.0]),
    )  # fmt: skip
    order = [pair.prompt_id for pair in sorted(planned, key=lambda pair: pair.selection["pick"])]
    assert order[0] != 9
    before = ensemble.pair_information(torch.tensor([0.0, 0.0]), torch.tensor([36.0, 9.0]))
    assert before[0] > before[1]  # BALD alone would ask about the outlier first


def test_information_leaves_a_pair_the_posterior_is_sure_of_even_when_its_rewards_tie():
    # 10 against 11: the head is certain it is a coin flip (no spread); 10 against 12: unsure.
    features = {10: [0.0, 0.0], 11: [0.0, 0.0], 12: [0.0, 2.0]}
    answers = {1: _answers(1, ["w", "x", "y"])}
    (pair,) = choose_pairs(
        answers, settings=INFORMATION, scores={10: 0.0, 11: 0.0, 12: 3.0}, reward_version=1,
        heldout=set(), seed=0, posterior=_posterior(features, [0.0, 1.5]),
    )  # fmt: skip
    assert pair.response_b_id == 12


def test_information_without_a_posterior_falls_back_to_the_closest_rewards_and_says_so():
    answers = {1: _answers(1, ["w", "x", "y"])}
    (pair,) = choose_pairs(
        answers, settings=INFORMATION, scores={10: 0.0, 11: 0.05, 12: 2.0}, reward_version=2,
        heldout=set(), seed=0, posterior=None,
    )  # fmt: skip
    assert (pair.response_a_id, pair.response_b_id) == (10, 11)
    assert pair.selection["strategy"] == "uncertainty"
    assert "no head posterior" in pair.selection["why"]


@pytest.mark.django_db
def test_a_round_under_information_trains_the_posterior_and_pairs_by_it(tiny_project):
    judged_pairs(tiny_project, 8)
    _use_pairing(tiny_project, {"strategy": "information", "random_share": 0.0})
    assert ensemble.load_posterior(_trained_reward(tiny_project).artifact_path) is not None
    round_ = _generated_round(tiny_project)

    comparisons = list(Comparison.objects.filter(round=round_))
    assert comparisons
    picks = sorted(comparisons, key=lambda c: c.selection["pick"])
    assert [c.selection["pick"] for c in picks] == list(range(1, len(picks) + 1))
    priorities = [c.priority for c in picks]
    assert priorities == sorted(set(priorities), reverse=True)  # served in the order picked
    assert all(c.selection["strategy"] == "information" for c in comparisons)


def runner_device():
    from training.engine.models import pick_device

    return pick_device()


def test_pairing_settings_are_checked(db, project):
    from config.errors import ApplicationError

    for bad in ({"answers_per_prompt": 1}, {"random_share": 1.5}, {"strategy": "cleverest"}):
        with pytest.raises(ApplicationError, match="pairing"):
            training_settings_update(project=project, values={"pairing": bad})

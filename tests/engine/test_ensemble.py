"""Bootstrap heads with randomized priors: they agree where labels pinned the reward down,
split where nothing did, and BALD asks about the split, not about the coin flips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.tiny import save_tiny_bert, save_tiny_llama, separable_rows
from training.engine import ensemble
from training.engine.config import ConfigError, RewardConfig
from training.engine.models import (
    load_reward_model,
    reward_head_inputs,
    reward_head_weight,
    reward_scores,
)
from training.engine.ppo import RewardModelScore, right_pad
from training.engine.reward import train_reward


def world(pairs: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3-D features. Axis 0 drives every label (P(first better) = sigmoid(2 x0)); axis 1 is
    noise the labels ignore (a pair along it is a known coin flip); no training pair ever
    varies along axis 2."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.zeros(pairs, 3)
    first[:, 0] = torch.randn(pairs, generator=generator)
    first[:, 1] = torch.randn(pairs, generator=generator) * 2
    target = torch.bernoulli(torch.sigmoid(2 * first[:, 0]), generator=generator)
    return first, torch.zeros(pairs, 3), target


def information(heads: torch.Tensor, difference: list[float]) -> float:
    first = ensemble.head_scores(torch.tensor([difference]), heads)
    second = ensemble.head_scores(torch.zeros(1, 3), heads)
    return float(ensemble.expected_information(first, second)[0])


def test_heads_split_on_what_no_label_spans_and_agree_on_a_known_coin_flip():
    chosen, rejected, target = world()
    heads = ensemble.fit_bootstrap_heads(chosen, rejected, target, heads=16, seed=1)
    assert heads.shape == (16, 3)
    # Pairs of a typical training pair's size (|difference| near 2.2) along each axis.
    unexplored = information(heads, [0.0, 0.0, 3.0])
    coin_flip = information(heads, [0.0, 3.0, 0.0])
    decided = information(heads, [3.0, 0.0, 0.0])
    assert unexplored > 0.1
    assert coin_flip < unexplored / 5  # close in reward, but the labels settled it
    assert decided < unexplored / 5
    # The margin would rank the coin flip as the closest pair; BALD ranks it low.
    mean = heads.mean(dim=0)
    assert abs(float(mean[1])) < abs(float(mean[0]))


def test_more_labels_shrink_the_doubt_and_the_seed_fixes_the_heads():
    few = ensemble.fit_bootstrap_heads(*world(pairs=8), heads=16, seed=3)
    many = ensemble.fit_bootstrap_heads(*world(pairs=800), heads=16, seed=3)
    # Along axis 1 the labels say "no effect": many of them pin that down, few do not.
    assert many[:, 1].std() < few[:, 1].std() / 2
    again = ensemble.fit_bootstrap_heads(*world(pairs=8), heads=16, seed=3)
    assert torch.equal(few, again)


def test_bald_is_zero_when_every_head_says_the_same():
    same = torch.tensor([[0.3, 0.3, 0.3]])
    assert float(ensemble.expected_information(same, torch.zeros(1, 3))[0]) < 1e-6
    split = torch.tensor([[-4.0, 4.0, 0.0]])
    assert float(ensemble.expected_information(split, torch.zeros(1, 3))[0]) > 0.5


def posterior_information(posterior: ensemble.HeadPosterior, difference: list[float]) -> float:
    answers = posterior.answers(torch.tensor([difference, [0.0, 0.0, 0.0]]))
    margin = answers.mean[0] - answers.mean[1]
    variance = (answers.whitened[0] - answers.whitened[1]).pow(2).sum()
    return float(ensemble.pair_information(margin[None], variance[None])[0])


def test_the_posterior_keeps_the_prior_where_no_label_spans_and_settles_a_known_coin_flip():
    chosen, rejected, target = world()
    posterior = ensemble.HeadPosterior.fit(chosen, rejected, target)
    unexplored = posterior_information(posterior, [0.0, 0.0, 3.0])
    coin_flip = posterior_information(posterior, [0.0, 3.0, 0.0])
    decided = posterior_information(posterior, [3.0, 0.0, 0.0])
    assert unexplored > 0.1
    assert coin_flip < unexplored / 5 and decided < unexplored / 5
    covariance = posterior.factor @ posterior.factor.T
    typical = float((chosen - rejected).pow(2).sum(dim=1).mean())
    # Along axis 2 nothing but the prior: one logit of spread for a typical pair.
    assert float(covariance[2, 2]) * typical == pytest.approx(1.0, rel=1e-3)
    assert float(posterior.mode[0]) == pytest.approx(2.0, abs=0.4)  # the labels' true slope


def test_more_labels_shrink_the_posterior():
    few = ensemble.HeadPosterior.fit(*world(pairs=8))
    many = ensemble.HeadPosterior.fit(*world(pairs=800))
    assert (many.factor @ many.factor.T)[1, 1] < (few.factor @ few.factor.T)[1, 1] / 10


@pytest.mark.parametrize("margin, variance", [(0.0, 4.0), (2.0, 1.0), (0.0, 0.01), (5.0, 9.0)])
def test_closed_form_information_is_close_to_sampling_the_margin(margin, variance):
    generator = torch.Generator().manual_seed(0)
    sampled = margin + variance**0.5 * torch.randn(400_000, generator=generator)
    p = torch.sigmoid(sampled)
    monte_carlo = float(
        ensemble._entropy_bits(p.mean()) - ensemble._entropy_bits(p).mean()
    )  # BALD by its definition
    closed = float(ensemble.pair_information(torch.tensor([margin]), torch.tensor([variance]))[0])
    assert closed == pytest.approx(monte_carlo, rel=0.2, abs=2e-3)  # two approximations


def test_informative_order_picks_once_a_group_and_not_the_same_thing_twice():
    head = ensemble.HeadPosterior(mode=torch.zeros(2), factor=torch.eye(2))
    answers = head.answers(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 2.8], [0.0, 1.0]]))
    pairs = torch.tensor([[1, 0], [1, 0], [2, 0], [3, 0]])
    order = ensemble.informative_order(answers, pairs, groups=[0, 1, 2, 2], count=10)
    # The duplicate of the first pick is worth less than the fresh direction once it is known;
    # group 2 gets one pair, its better one.
    assert [pick.index for pick in order] == [0, 2, 1]
    alone = float(ensemble.pair_information(torch.tensor([0.0]), torch.tensor([9.0]))[0])
    assert order[0].information == pytest.approx(alone) and order[2].information < alone
    # What the first pick removes by hand: two targets with covariance 9, weight 1/4, variance 9.
    assert order[0].value == pytest.approx(2 * 0.25 * 81 / (4 + 9), rel=1e-4)
    assert ensemble.informative_order(answers, pairs, groups=[0, 1, 2, 2], count=1) == order[:1]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def _scorer(artifact: Path, batch_size: int) -> RewardModelScore:
    return RewardModelScore(
        artifact, device=torch.device("cpu"), precision="fp32", batch_size=batch_size,
        cache_dir=None,
    )  # fmt: skip


@pytest.mark.parametrize("backbone, use_lora", [("llama", True), ("bert", False)])
def test_a_reward_model_trained_with_heads_scores_each_answer_by_every_head(
    backbone, use_lora, request, tmp_path
):
    base = request.getfixturevalue(backbone)
    config = RewardConfig(
        base_model=str(base), use_lora=use_lora, max_steps=6, batch_size=4,
        learning_rate=1e-2, max_length=32, max_prompt_length=16, precision="fp32",
        ensemble_heads=4,
    )  # fmt: skip
    train_reward(separable_rows(24), config, tmp_path / "rm")
    heads = ensemble.load_heads(tmp_path / "rm")
    assert heads is not None and heads.shape[0] == 4

    scorer = _scorer(tmp_path / "rm", batch_size=4)
    prompts, answers = ["Say yes.", "Say yes.", "Say no."], ["yes", "no no no", "maybe"]
    scores, per_head = scorer.with_heads(prompts, answers)
    assert scores == pytest.approx(scorer(prompts, answers), abs=1e-5)
    assert [len(h) for h in per_head] == [4, 4, 4]
    # The captured features are the head's input: the trained head reproduces the margins,
    # and each head's score is its weight on those features.
    model, tokenizer = load_reward_model(tmp_path / "rm")
    ids, mask = right_pad([tokenizer("yes")["input_ids"], tokenizer("no no no")["input_ids"]],
                          tokenizer.pad_token_id)  # fmt: skip
    with torch.inference_mode(), reward_head_inputs(model) as captured:
        rewards = reward_scores(model, ids, mask)
    features = captured[-1]  # (2, H)
    margin = (features[0] - features[1]) @ reward_head_weight(model)
    assert float(margin) == pytest.approx(float(rewards[0] - rewards[1]), abs=1e-4)
    by_head = ensemble.head_scores(features, heads)
    assert by_head.shape == (2, 4)


def test_a_reward_model_without_heads_scores_with_empty_head_lists(llama, tmp_path):
    config = RewardConfig(
        base_model=str(llama), max_steps=2, batch_size=4, max_length=32, max_prompt_length=16,
        precision="fp32",
    )  # fmt: skip
    train_reward(separable_rows(8), config, tmp_path / "rm")
    scorer = _scorer(tmp_path / "rm", batch_size=4)
    assert scorer.with_heads(["q"], ["a"])[1] == [[]]
    assert scorer.with_posterior(["q"], ["a"]) == ([scorer(["q"], ["a"])[0]], None)


def test_a_reward_model_trained_with_the_posterior_scores_answers_under_it(llama, tmp_path):
    config = RewardConfig(
        base_model=str(llama), max_steps=6, batch_size=4, learning_rate=1e-2, max_length=32,
        max_prompt_length=16, precision="fp32", head_posterior=True,
    )  # fmt: skip
    train_reward(separable_rows(24), config, tmp_path / "rm")
    posterior = ensemble.load_posterior(tmp_path / "rm")
    assert posterior is not None and ensemble.load_heads(tmp_path / "rm") is None
    scorer = _scorer(tmp_path / "rm", batch_size=2)
    prompts, answers = ["Say yes.", "Say yes.", "Say no."], ["yes", "no no no", "maybe"]
    scores, under = scorer.with_posterior(prompts, answers)
    assert scores == pytest.approx(scorer(prompts, answers), abs=1e-5)
    assert under is not None
    width = posterior.mode.shape[0]
    assert under.mean.shape == (3,) and under.whitened.shape == (3, width)
    # The posterior is centred at the trained head: its margins are the reward model's own.
    assert float(under.mean[0] - under.mean[1]) == pytest.approx(scores[0] - scores[1], abs=1e-4)


def test_ensemble_heads_outside_two_to_sixty_four_are_refused():
    with pytest.raises(ConfigError, match="ensemble_heads"):
        RewardConfig(base_model="x", ensemble_heads=1).validate()

"""PPO and RLOO math checked against values worked out by hand; padding holds garbage on purpose,
so a function that forgot the mask would give a different number."""

from __future__ import annotations

import math

import pytest
import torch

from training.engine.losses import (
    adaptive_kl_coef,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae_advantages,
    kl_per_token,
    masked_mean,
    masked_whiten,
    rloo_advantages,
    token_rewards,
)

GARBAGE = 99.0


def rows(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_masked_mean_ignores_padding():
    assert masked_mean(rows([1.0, 3.0, GARBAGE]), rows([1, 1, 0]).bool()).item() == 2.0


def test_masked_whiten_uses_answer_tokens_only_and_zeroes_padding():
    mask = rows([1, 1, 0], [1, 0, 0]).bool()
    whitened = masked_whiten(rows([1.0, 2.0, GARBAGE], [3.0, GARBAGE, GARBAGE]), mask)
    # mean 2, unbiased variance ((1 + 0 + 1) / 2) = 1
    torch.testing.assert_close(whitened, rows([-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    kept = masked_whiten(rows([1.0, 2.0, GARBAGE], [3.0, GARBAGE, GARBAGE]), mask, shift_mean=False)
    torch.testing.assert_close(kept, rows([1.0, 2.0, 0.0], [3.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_kl_estimators_k1_and_k3():
    logprobs, ref = rows([math.log(0.5)]), rows([math.log(0.25)])
    assert kl_per_token(logprobs, ref, "k1").item() == pytest.approx(math.log(2), abs=1e-6)
    # r = ref / pi = 0.5: (r - 1) - log r
    assert kl_per_token(logprobs, ref, "k3").item() == pytest.approx(-0.5 + math.log(2), abs=1e-6)
    # k3 is never negative, even where the policy is less likely than the reference
    assert kl_per_token(ref, logprobs, "k3").item() > 0 > kl_per_token(ref, logprobs, "k1").item()


def test_token_rewards_put_the_score_on_the_last_answer_token():
    kl = rows([0.1, 0.2, GARBAGE], [0.4, GARBAGE, GARBAGE])
    mask = rows([1, 1, 0], [1, 0, 0]).bool()
    rewards, non_score = token_rewards(rows(2.0, -1.0), kl, mask, kl_coef=0.5)
    torch.testing.assert_close(rewards, rows([-0.05, 1.9, 0.0], [-1.2, 0.0, 0.0]))
    torch.testing.assert_close(non_score, rows([-0.05, -0.1, 0.0], [-0.2, 0.0, 0.0]))


def test_gae_matches_the_recursion_worked_by_hand():
    rewards = rows([0.5, 1.0, GARBAGE])
    values = rows([0.2, 0.4, GARBAGE])
    mask = rows([1, 1, 0]).bool()
    advantages, returns = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    # t=1 (last token): delta = 1.0 + 0.9 * 0 - 0.4 = 0.6; A = 0.6
    # t=0: delta = 0.5 + 0.9 * 0.4 - 0.2 = 0.66; A = 0.66 + 0.9 * 0.8 * 0.6 = 1.092
    torch.testing.assert_close(advantages, rows([1.092, 0.6, 0.0]))
    torch.testing.assert_close(returns, rows([1.292, 1.0, 0.0]))


def test_gae_with_gamma_and_lambda_one_is_the_reward_to_go_minus_value():
    rewards, values = rows([1.0, 2.0, 3.0]), rows([0.5, 0.5, 0.5])
    advantages, returns = gae_advantages(rewards, values, torch.ones(1, 3).bool(), gamma=1, lam=1)
    torch.testing.assert_close(advantages, rows([5.5, 4.5, 2.5]))
    torch.testing.assert_close(returns, rows([6.0, 5.0, 3.0]))


def test_clipped_policy_loss_worked_by_hand():
    # ratios 1.5, 0.5 and 1.5, 0.5; advantages +1, +1, -1, -1; one padded token; clip 0.2
    logprobs = rows([math.log(1.5), math.log(0.5), math.log(1.5), math.log(0.5), GARBAGE])
    old = torch.zeros(1, 5)
    advantages = rows([1.0, 1.0, -1.0, -1.0, GARBAGE])
    mask = rows([1, 1, 1, 1, 0]).bool()
    loss, stats = clipped_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    # per token max(-A r, -A clip(r)): max(-1.5, -1.2) = -1.2 (clipped), max(-0.5, -0.8) = -0.5,
    # max(1.5, 1.2) = 1.5, max(0.5, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8) / 4, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(0.5)
    expected_kl = 0.5 * (2 * math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4
    assert stats["approx_kl"] == pytest.approx(expected_kl, abs=1e-6)
    assert stats["ratio"] == pytest.approx(1.0, abs=1e-6)


def test_clipped_policy_loss_gradient_stops_outside_the_trust_region():
    logprobs = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = clipped_policy_loss(
        logprobs, torch.zeros(1, 2), rows([1.0, 1.0]), torch.ones(1, 2).bool(), cliprange=0.2
    )
    loss.backward()
    # d/dlogp of -A * ratio / 2 tokens = -ratio / 2 where unclipped; 0 where the clip is active
    torch.testing.assert_close(logprobs.grad, rows([0.0, -1.1 / 2]))


def test_clipped_value_loss_worked_by_hand():
    values = rows([1.0, 0.0, 0.6, GARBAGE])
    old = rows([0.5, 0.5, 0.5, GARBAGE])
    returns = rows([2.0, 0.0, 2.0, GARBAGE])
    mask = rows([1, 1, 1, 0]).bool()
    loss, stats = clipped_value_loss(values, old, returns, mask, cliprange_value=0.2)
    # clipped values 0.7, 0.3, 0.6: errors max(1, 1.69) = 1.69, max(0, 0.09) = 0.09, 1.96
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09 + 1.96) / 3, abs=1e-6)
    assert stats["value_clipfrac"] == pytest.approx(2 / 3)


def test_explained_variance():
    mask = rows([1, 1, 1, 0]).bool()
    returns = rows([1.0, 2.0, 3.0, GARBAGE])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 4), returns, mask) == pytest.approx(0.0)
    # residuals 1, -1, 0 (variance 1) against returns of variance 1
    assert explained_variance(rows([0.0, 3.0, 3.0, 0.0]), returns, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(returns, torch.ones(1, 4), mask))


def test_rloo_baseline_is_the_mean_of_the_other_answers():
    advantages = rloo_advantages(rows([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    # 1 - (2 + 3) / 2 = -1.5, 2 - (1 + 3) / 2 = 0, 3 - (1 + 2) / 2 = 1.5
    torch.testing.assert_close(advantages, rows([-1.5, 0.0, 1.5], [0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(rows([1.0]))


def test_adaptive_kl_controller_moves_beta_toward_the_target():
    # KL 12 against target 6: error clipped to +0.2, scaled by 16 / 10000 steps
    assert adaptive_kl_coef(0.1, 12.0, target=6.0, horizon=10000, steps=16) == pytest.approx(
        0.1 * (1 + 0.2 * 16 / 10000)
    )
    # KL 5.4 against 6: error -0.1
    assert adaptive_kl_coef(0.1, 5.4, target=6.0, horizon=10000, steps=16) == pytest.approx(
        0.1 * (1 - 0.1 * 16 / 10000)
    )

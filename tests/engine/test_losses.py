"""Loss math checked against values worked out by hand with math.log / math.exp."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.engine.losses import (
    bradley_terry_loss,
    dpo_loss,
    projected_token_logprobs,
    sequence_logprobs,
    shift_for_next_token,
)


def log_sigmoid(x: float) -> float:
    return -math.log(1 + math.exp(-x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- sequence_logprobs -------------------------------------------------------------------------


def test_sequence_logprobs_sums_label_logprobs_over_masked_positions():
    # B=1, T=2, V=3.
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[2, 0]])
    mask = torch.tensor([[True, True]])
    lse_0 = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    expected = (3 - lse_0) + (0 - math.log(3))
    assert sequence_logprobs(logits, labels, mask).item() == pytest.approx(expected, abs=1e-6)


def test_sequence_logprobs_skips_unmasked_positions():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[2, 0]])
    mask = torch.tensor([[0, 1]])  # 0/1 masks work as well as bool
    assert sequence_logprobs(logits, labels, mask).item() == pytest.approx(-math.log(3), abs=1e-6)


def test_padding_positions_do_not_change_sequence_logprobs():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 4, 2], [0, 3, 3]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    before = sequence_logprobs(logits, labels, mask)
    # Anything at a padding position: other logits, an out-of-range label like -100.
    padded_logits = logits.clone()
    padded_logits[1, 2] = torch.tensor([50.0, -50.0, float("-inf"), 7.0, 0.0])
    padded_labels = labels.clone()
    padded_labels[1, 2] = -100
    after = sequence_logprobs(padded_logits, padded_labels, mask)
    torch.testing.assert_close(after, before)


def test_sequence_logprobs_of_bfloat16_logits_is_float32_and_close():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 11) * 5
    labels = torch.randint(0, 11, (2, 4))
    mask = torch.ones(2, 4, dtype=torch.bool)
    exact = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)
    got = sequence_logprobs(logits.bfloat16(), labels, mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, exact, atol=0.2, rtol=0.02)  # bf16 input rounding only


def test_sequence_logprobs_gradient_flows_to_logits():
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    sequence_logprobs(logits, torch.tensor([[1, 2]]), torch.tensor([[True, False]])).backward()
    # d/dz of (z_1 - logsumexp z) at z = 0 is onehot(1) - 1/3; the unmasked row gets nothing.
    expected = torch.tensor([[[-1 / 3, 2 / 3, -1 / 3], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(logits.grad, expected)


def test_sequence_logprobs_refuses_misaligned_shapes():
    with pytest.raises(ValueError, match="shift_for_next_token"):
        sequence_logprobs(
            torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2)
        )


def test_shift_for_next_token_pairs_each_logit_with_the_following_token():
    logits = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    input_ids = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    loss_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    shifted_logits, labels, mask = shift_for_next_token(logits, input_ids, loss_mask)
    assert shifted_logits.shape == (2, 3, 1)
    assert torch.equal(shifted_logits, logits[:, :3])
    assert labels.tolist() == [[11, 12, 13], [21, 22, 23]]
    assert mask.tolist() == [[0, 1, 1], [1, 1, 0]]


# --- Bradley-Terry -----------------------------------------------------------------------------


def test_bradley_terry_is_minus_log_sigmoid_of_the_reward_difference():
    loss, stats = bradley_terry_loss(t(2.0, 0.0), t(1.0, 1.0))
    expected = -(log_sigmoid(1.0) + log_sigmoid(-1.0)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["accuracy"] == 0.5
    assert stats["margin"] == pytest.approx(0.0)
    assert stats["chosen"] == pytest.approx(1.0)
    assert stats["rejected"] == pytest.approx(1.0)


def test_bradley_terry_tie_is_a_half_target():
    loss, stats = bradley_terry_loss(t(2.0, 3.0), t(0.0, 0.0), target=t(1.0, 0.5))
    tie = -(0.5 * log_sigmoid(3.0) + 0.5 * log_sigmoid(-3.0))
    expected = (-log_sigmoid(2.0) + tie) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # The tie is left out of accuracy.
    assert stats["accuracy"] == 1.0
    assert stats["decided"] == 1.0


def test_bradley_terry_tie_loss_is_lowest_at_equal_rewards():
    equal, _ = bradley_terry_loss(t(1.0), t(1.0), target=t(0.5))
    apart, _ = bradley_terry_loss(t(2.0), t(1.0), target=t(0.5))
    assert equal.item() == pytest.approx(math.log(2), abs=1e-6)
    assert apart.item() > equal.item()


def test_bradley_terry_accuracy_is_nan_when_every_pair_is_a_tie():
    _, stats = bradley_terry_loss(t(1.0), t(0.0), target=t(0.5))
    assert math.isnan(stats["accuracy"])
    assert stats["decided"] == 0.0


def test_bradley_terry_margin_is_subtracted_inside_the_sigmoid():
    loss, stats = bradley_terry_loss(t(3.0), t(1.0), margin=t(0.5))
    assert loss.item() == pytest.approx(-log_sigmoid(3.0 - 1.0 - 0.5), abs=1e-6)
    assert stats["margin"] == pytest.approx(2.0)  # the reward gap itself, not minus the margin


def test_bradley_terry_weights_make_a_weighted_mean():
    loss, _ = bradley_terry_loss(t(1.0, 0.0), t(0.0, 1.0), weight=t(3.0, 1.0))
    expected = (3 * -log_sigmoid(1.0) + 1 * -log_sigmoid(-1.0)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_bradley_terry_gradient_pushes_chosen_up_and_rejected_down():
    chosen = t(0.0).requires_grad_()
    rejected = t(0.0).requires_grad_()
    loss, _ = bradley_terry_loss(chosen, rejected)
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.5)
    assert rejected.grad.item() == pytest.approx(0.5)


def test_bradley_terry_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="weight"):
        bradley_terry_loss(t(1.0, 2.0), t(0.0, 0.0), weight=t(1.0))


# --- DPO ---------------------------------------------------------------------------------------

# One pair: policy log-probs -1 (chosen) and -3 (rejected), reference -2 and -2.
# logits = (-1 - -3) - (-2 - -2) = 2.
POLICY = (t(-1.0), t(-3.0))
REF = (t(-2.0), t(-2.0))


def test_dpo_sigmoid():
    loss, _ = dpo_loss(*POLICY, *REF, beta=0.1)
    assert loss.item() == pytest.approx(-log_sigmoid(0.1 * 2), abs=1e-6)


def test_dpo_sigmoid_with_label_smoothing_is_conservative_dpo():
    loss, _ = dpo_loss(*POLICY, *REF, beta=0.1, label_smoothing=0.2)
    expected = -log_sigmoid(0.2) * 0.8 - log_sigmoid(-0.2) * 0.2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_dpo_robust():
    loss, _ = dpo_loss(*POLICY, *REF, beta=0.1, loss_type="robust", label_smoothing=0.2)
    expected = (-log_sigmoid(0.2) * 0.8 + log_sigmoid(-0.2) * 0.2) / (1 - 0.4)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_dpo_hinge():
    loss, _ = dpo_loss(*POLICY, *REF, beta=0.1, loss_type="hinge")
    assert loss.item() == pytest.approx(1 - 0.1 * 2, abs=1e-6)
    zero, _ = dpo_loss(*POLICY, *REF, beta=1.0, loss_type="hinge")  # 1 - 2 < 0: no loss
    assert zero.item() == 0.0


def test_dpo_ipo():
    loss, _ = dpo_loss(*POLICY, *REF, beta=0.1, loss_type="ipo")
    assert loss.item() == pytest.approx((2 - 1 / 0.2) ** 2, abs=1e-5)


def test_dpo_weights_make_a_weighted_mean():
    # Pair 2: logits = (-2 - -1) - 0 = -1.
    loss, _ = dpo_loss(
        t(-1.0, -2.0), t(-3.0, -1.0), t(-2.0, -2.0), t(-2.0, -2.0), beta=1.0, weight=t(1.0, 3.0)
    )
    expected = (1 * -log_sigmoid(2.0) + 3 * -log_sigmoid(-1.0)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_dpo_stats_are_the_implicit_rewards():
    # Pair 1: rewards 0.5*(-1 - -2) = 0.5 and 0.5*(-3 - -2) = -0.5.
    # Pair 2: rewards 0.5*(-4 - -2) = -1.0 and 0.5*(-1 - -2) = 0.5.
    _, stats = dpo_loss(t(-1.0, -4.0), t(-3.0, -1.0), t(-2.0, -2.0), t(-2.0, -2.0), beta=0.5)
    assert stats["rewards/chosen"] == pytest.approx((0.5 - 1.0) / 2)
    assert stats["rewards/rejected"] == pytest.approx((-0.5 + 0.5) / 2)
    assert stats["rewards/accuracy"] == 0.5
    assert stats["rewards/margin"] == pytest.approx((1.0 + -1.5) / 2)


def test_dpo_gradient_raises_chosen_and_lowers_rejected_policy_logps():
    chosen, rejected = t(-1.0).requires_grad_(), t(-1.0).requires_grad_()
    loss, _ = dpo_loss(chosen, rejected, t(-1.0), t(-1.0), beta=0.1)
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.05)  # -beta * sigmoid(0)
    assert rejected.grad.item() == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "kto"}, "loss_type must be one of sigmoid, ipo, robust, hinge"),
        ({"beta": 0.0}, "beta must be positive"),
        ({"label_smoothing": 0.6}, r"sigmoid must be in \[0, 0.5\]"),
        ({"loss_type": "robust", "label_smoothing": 0.5}, r"robust must be in \[0, 0.5\)"),
        ({"loss_type": "hinge", "label_smoothing": 0.1}, "only applies to the sigmoid and robust"),
    ],
)
def test_dpo_refuses_bad_settings(kwargs, message):
    settings = {"beta": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        dpo_loss(*POLICY, *REF, **settings)


# --- log-probs through a frozen projection, a chunk at a time -------------------------------------


@pytest.mark.parametrize(("chunk", "temperature"), [(1, 1.0), (3, 0.7), (7, 1.0), (64, 1.3)])
def test_projected_token_logprobs_equal_cross_entropy_in_value_and_gradient(chunk, temperature):
    torch.manual_seed(0)
    hidden = torch.randn(7, 5, requires_grad=True)
    weight = torch.randn(11, 5)
    targets = torch.randint(0, 11, (7,))
    upstream = torch.randn(7)  # distinct per token, as a DPO batch's sequences give

    logits = hidden @ weight.T / temperature
    want = -F.cross_entropy(logits, targets, reduction="none")
    want_entropy = -(logits.log_softmax(-1).exp() * logits.log_softmax(-1)).sum(-1)
    (want_grad,) = torch.autograd.grad((want * upstream).sum(), hidden)
    got, got_entropy = projected_token_logprobs(
        hidden, weight, targets, temperature=temperature, chunk=chunk, with_entropy=True
    )
    (got_grad,) = torch.autograd.grad((got * upstream).sum(), hidden)

    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_entropy, want_entropy.detach())
    torch.testing.assert_close(got_grad, want_grad)
    assert not got_entropy.requires_grad  # reported, never trained on


def test_projected_token_logprobs_refuse_a_trainable_weight():
    with pytest.raises(ValueError, match="frozen"):
        projected_token_logprobs(
            torch.randn(2, 3), torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1])
        )

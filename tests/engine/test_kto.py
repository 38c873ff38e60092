"""KTO: the loss against values worked out by hand, the loop on a tiny random Llama, and rated
answers read from JSONL (labels, or 1-7 scores through a threshold)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.engine.tiny import save_tiny_llama, separable_rows
from training.engine.config import ConfigError, KTOConfig
from training.engine.data import (
    DataError,
    EncodedCompletion,
    RatingRow,
    read_rating_jsonl,
    with_desirable_score,
)
from training.engine.dpo import REFERENCE_FILE
from training.engine.kto import mismatched_pairs, train_kto
from training.engine.losses import kto_loss
from training.engine.models import read_artifact
from training.engine.runtime import CHECKPOINT_DIR, Callbacks


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- the loss ----------------------------------------------------------------------------------

# Three answers: log-probs under the policy -1, -2, -3 and the reference -1.5, -1, -3, so the
# log-ratios r are 0.5, -1 and 0; the first and last desirable. Two mismatched pairs with
# log-ratios -4 - -4.6 = 0.6 and -5 - -5.2 = 0.2: z_ref = (0.6 + 0.2) / 2 = 0.4.
POLICY, REF, DESIRABLE = t(-1.0, -2.0, -3.0), t(-1.5, -1.0, -3.0), torch.tensor([True, False, True])
POLICY_KL, REF_KL = t(-4.0, -5.0), t(-4.6, -5.2)


def test_kto_loss_matches_the_hand_worked_example():
    loss, stats = kto_loss(
        POLICY, REF, DESIRABLE, POLICY_KL, REF_KL,
        beta=0.5, desirable_weight=1.0, undesirable_weight=2.0,
    )  # fmt: skip
    first = 1.0 * (1 - sigmoid(0.5 * (0.5 - 0.4)))  # desirable: beta * (r - z_ref)
    second = 2.0 * (1 - sigmoid(0.5 * (0.4 - -1.0)))  # undesirable: beta * (z_ref - r)
    third = 1.0 * (1 - sigmoid(0.5 * (0.0 - 0.4)))
    assert loss.item() == pytest.approx((first + second + third) / 3, abs=1e-6)
    assert stats["kl"] == pytest.approx(0.4, abs=1e-6)
    assert stats["rewards/chosen"] == pytest.approx((0.5 * 0.5 + 0.5 * 0.0) / 2, abs=1e-6)
    assert stats["rewards/rejected"] == pytest.approx(0.5 * -1.0, abs=1e-6)


def test_a_negative_kl_estimate_is_clamped_to_a_zero_reference_point():
    # Mismatched log-ratios -0.3 and -0.1: the mean is negative, and KL never is.
    loss, stats = kto_loss(POLICY, REF, DESIRABLE, t(-4.3, -5.1), t(-4.0, -5.0), beta=0.5)
    expected = ((1 - sigmoid(0.5 * 0.5)) + (1 - sigmoid(0.5 * 1.0)) + (1 - sigmoid(0.0))) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["kl"] == 0.0


def test_the_reference_point_carries_no_gradient_and_the_answers_get_the_hand_worked_one():
    policy = POLICY.clone().requires_grad_()
    policy_kl = POLICY_KL.clone().requires_grad_()
    loss, _ = kto_loss(policy, REF, DESIRABLE, policy_kl, REF_KL, beta=0.5)
    loss.backward()
    assert policy_kl.grad is None or torch.count_nonzero(policy_kl.grad) == 0
    # d/dr (1 - sigmoid(beta (r - z))) = -beta s (1 - s), s = sigmoid(beta (r - z)); over 3.
    s = sigmoid(0.5 * (0.5 - 0.4))
    assert policy.grad[0].item() == pytest.approx(-0.5 * s * (1 - s) / 3, abs=1e-6)
    s = sigmoid(0.5 * (0.4 - -1.0))  # undesirable: d/dr (1 - sigmoid(beta (z - r))) > 0
    assert policy.grad[1].item() == pytest.approx(0.5 * s * (1 - s) / 3, abs=1e-6)


def test_a_batch_without_undesirable_answers_has_no_rejected_reward():
    _, stats = kto_loss(t(-1.0), t(-1.0), torch.tensor([True]), t(-1.0), t(-1.0), beta=0.1)
    assert math.isnan(stats["rewards/rejected"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"beta": 0.0}, "beta must be positive"), ({"beta": 0.1, "undesirable_weight": 0}, "weight")],
)
def test_kto_loss_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kto_loss(POLICY, REF, DESIRABLE, POLICY_KL, REF_KL, **kwargs)


# --- the loop ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


def rated_rows(count: int) -> list[RatingRow]:
    """Each prompt twice: its "good yes" answer desirable, its "bad no" answer not."""
    rows = []
    for pair in separable_rows(count):
        rows.append(RatingRow(pair.prompt, pair.chosen, desirable=True))
        rows.append(RatingRow(pair.prompt, pair.rejected, desirable=False))
    return rows


def small_config(base: Path, **overrides) -> KTOConfig:
    values = dict(
        base_model=str(base), max_steps=12, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0,
        eval_every=6, checkpoint_every=100, max_length=32, max_prompt_length=16,
        precision="fp32",
    )  # fmt: skip
    return KTOConfig(**{**values, **overrides})


def test_loss_falls_and_desirable_answers_gain_on_undesirable_ones(base, tmp_path):
    losses: list[float] = []
    callbacks = Callbacks(
        on_metrics=lambda step, split, m: losses.append(m["loss"]) if split == "train" else None
    )
    result = train_kto(rated_rows(32), small_config(base), tmp_path / "out", callbacks=callbacks)

    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < losses[0] - 0.01
    held_out = result.eval_metrics
    assert held_out["rewards/chosen"] > held_out["rewards/rejected"]
    info = read_artifact(tmp_path / "out", expected=("policy-adapter",))
    assert (info["ratings"], info["desirable"]) == (64, 32)
    assert not (tmp_path / "out" / REFERENCE_FILE).exists()
    assert not (tmp_path / "out" / CHECKPOINT_DIR).exists()


def test_mismatched_pairs_give_every_prompt_another_rows_answer_once():
    items = [EncodedCompletion([10 + i], [20 + i, 2], i) for i in range(5)]
    pairs = mismatched_pairs(items, max_length=8, seed=0)
    assert [pair.prompt_ids for pair in pairs] == [item.prompt_ids for item in items]
    answers = [pair.completion_ids[0] for pair in pairs]
    assert sorted(answers) == [20, 21, 22, 23, 24]  # each answer used once
    assert all(answer != 20 + i for i, answer in enumerate(answers))  # never its own


def test_kto_config_checks_its_settings():
    with pytest.raises(ConfigError, match="desirable_score=8"):
        KTOConfig(desirable_score=8).validate()
    with pytest.raises(ConfigError, match="reference=init needs init_adapter"):
        KTOConfig(reference="init").validate()


# --- reading ratings ---------------------------------------------------------------------------


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_reader_takes_labels_and_scores_and_the_threshold_redraws_scored_rows(tmp_path):
    path = write_lines(tmp_path / "ratings.jsonl", [
        {"prompt": "Q", "completion": "good", "label": True},
        {"prompt": [{"role": "user", "content": "Q"}],
         "completion": [{"role": "assistant", "content": "bad"}], "label": False},
        {"prompt": "Q", "completion": "fine", "score": 5},
        {"prompt": "Q", "completion": "meh", "score": 4},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}],
         "score": 7},
    ])  # fmt: skip
    rows = read_rating_jsonl(path)
    assert [(row.completion, row.desirable, row.score) for row in rows] == [
        ("good", True, None), ("bad", False, None), ("fine", True, 5), ("meh", False, 4),
        ("", True, 7),
    ]  # fmt: skip
    # A stricter line: only 6 and 7 are desirable; labelled rows keep their label.
    strict = with_desirable_score(rows, 6)
    assert [row.desirable for row in strict] == [True, False, False, False, True]


@pytest.mark.parametrize(
    ("bad_line", "fault"),
    [
        ({"prompt": "Q", "completion": "A"}, 'needs "label"'),
        ({"prompt": "Q", "completion": "A", "label": "yes"}, '"label" must be true'),
        ({"prompt": "Q", "completion": "A", "score": 9}, "integer from 1 to 7"),
        ({"prompt": "Q", "completion": "A", "score": 4.5}, "integer from 1 to 7"),
        ({"prompt": "Q", "label": True}, '"prompt" and "completion"'),
    ],
)
def test_bad_ratings_are_reported_naming_the_line_and_the_rest_kept(tmp_path, bad_line, fault):
    path = write_lines(
        tmp_path / "ratings.jsonl", [{"prompt": "Q", "completion": "A", "label": True}, bad_line]
    )
    skipped: list[str] = []
    rows = read_rating_jsonl(path, on_skip=skipped.append)
    assert len(rows) == 1
    assert len(skipped) == 1 and "line 2" in skipped[0] and fault in skipped[0]
    with pytest.raises(DataError, match="no rating rows"):
        read_rating_jsonl(write_lines(tmp_path / "only-bad.jsonl", [bad_line]))

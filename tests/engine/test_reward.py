"""Bradley-Terry reward models on tiny random backbones: LoRA on a Llama, full on a BERT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.engine.tiny import save_tiny_bert, save_tiny_llama, separable_rows
from training.engine.config import (
    ConfigError,
    DPOConfig,
    LoraSettings,
    RewardConfig,
    config_from_dict,
)
from training.engine.data import PreferenceRow
from training.engine.reward import evaluate_reward_model, pair_loss, train_reward
from training.engine.runtime import Callbacks


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def small_config(base: Path, **overrides) -> RewardConfig:
    values = dict(
        base_model=str(base),
        max_steps=20,
        batch_size=4,
        learning_rate=1e-2,
        warmup_ratio=0.0,
        eval_every=10,
        checkpoint_every=5,
        max_length=32,
        max_prompt_length=16,
        precision="fp32",
    )
    return RewardConfig(**{**values, **overrides})


def test_lora_reward_model_learns_a_separable_preference(llama, tmp_path):
    losses: list[float] = []
    callbacks = Callbacks(
        on_metrics=lambda step, split, m: losses.append(m["loss"]) if split == "train" else None
    )
    result = train_reward(
        separable_rows(64), small_config(llama), tmp_path / "rm", callbacks=callbacks
    )
    assert sum(losses[-3:]) / 3 < losses[0] - 0.2
    assert result.eval_metrics["accuracy"] == 1.0

    held_out = evaluate_reward_model(tmp_path / "rm", separable_rows(20, seed=7))
    assert held_out["accuracy"] == 1.0
    assert held_out["pairs"] == 20


def test_lora_reward_model_trains_only_adapter_and_head(llama, tmp_path):
    train_reward(separable_rows(16), small_config(llama, max_steps=3), tmp_path / "rm")
    saved = load_file(tmp_path / "rm" / "adapter_model.safetensors")
    assert any("lora_A" in name for name in saved)
    assert any("score" in name for name in saved)  # the new head travels with the adapter
    # Nothing of the base travels: every other tensor is a LoRA factor.
    assert all("lora_A" in name or "lora_B" in name or "score" in name for name in saved)


def test_full_fine_tune_of_a_small_encoder_changes_every_layer(bert, tmp_path):
    config = small_config(bert, use_lora=False, learning_rate=1e-3, max_steps=30)
    result = train_reward(separable_rows(64), config, tmp_path / "rm")
    before, after = (
        load_file(bert / "model.safetensors"),
        load_file(tmp_path / "rm" / "model.safetensors"),
    )
    changed = [
        name for name in before if name in after and not torch.equal(before[name], after[name])
    ]
    assert any("encoder.layer.0." in name for name in changed)
    assert any("encoder.layer.1." in name for name in changed)
    assert result.eval_metrics["accuracy"] >= 0.75


def test_ties_pull_rewards_together(llama, tmp_path):
    tie = [PreferenceRow(prompt=r.prompt, chosen=r.chosen, rejected=r.rejected, target=0.5)
           for r in separable_rows(32)]  # fmt: skip
    train_reward(tie, small_config(llama, max_steps=10, eval_fraction=0.0), tmp_path / "rm")
    metrics = evaluate_reward_model(tmp_path / "rm", separable_rows(16, seed=3))
    # Trained to call "good yes" and "bad no" equal: the margin stays near zero.
    assert abs(metrics["margin"]) < 0.5
    assert metrics["loss"] < 0.8


def test_killed_reward_run_resumes(llama, tmp_path):
    rows, config = separable_rows(40), small_config(llama, max_steps=10)

    def crash(step: int, total: int) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_reward(rows, config, tmp_path / "rm", callbacks=Callbacks(on_progress=crash))
    resumed = train_reward(rows, config, tmp_path / "rm")
    assert resumed.resumed_from_step == 5
    assert resumed.steps == 10


def test_the_default_adapter_covers_every_linear_layer_the_mlp_too(llama, tmp_path):
    # A project that sets only the rank keeps the reward model's own default targets.
    lora = config_from_dict(RewardConfig, {"lora": {"r": 4, "alpha": 8}}).lora
    assert lora.target_modules == ["all-linear"]
    train_reward(separable_rows(16), small_config(llama, max_steps=2, lora=lora), tmp_path / "rm")
    saved = load_file(tmp_path / "rm" / "adapter_model.safetensors")
    adapted = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name in saved if "lora_A" in name}
    assert {"q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"} <= adapted
    assert "score" not in adapted  # the head is trained whole, not through an adapter


def test_a_partial_lora_setting_keeps_each_config_s_own_targets():
    assert config_from_dict(DPOConfig, {"lora": {"r": 4}}).lora.target_modules == [
        "q_proj", "k_proj", "v_proj", "o_proj",
    ]  # fmt: skip
    chosen = config_from_dict(RewardConfig, {"lora": {"target_modules": ["q_proj"]}})
    assert chosen.lora.target_modules == ["q_proj"]


def test_an_unknown_lora_layer_is_refused_with_the_model_s_own_names(llama, tmp_path):
    lora = LoraSettings(target_modules=["qkv"])
    with pytest.raises(ConfigError, match="all-linear") as refused:
        train_reward(separable_rows(8), small_config(llama, lora=lora), tmp_path / "rm")
    assert "down_proj" in str(refused.value)


def test_centering_penalises_a_shared_offset_and_nothing_else():
    chosen, rejected = torch.tensor([3.0, 2.5]), torch.tensor([1.0, 0.5])
    batch = {"target": torch.ones(2), "margin": torch.zeros(2), "weight": torch.ones(2)}
    plain, _ = pair_loss(chosen, rejected, batch)
    assert pair_loss(chosen - 5, rejected - 5, batch)[0] == pytest.approx(float(plain))
    centred, _ = pair_loss(chosen, rejected, batch, center_rewards=0.1)
    assert float(centred) == pytest.approx(float(plain) + 0.1 * (16 + 9) / 2)


def test_the_centring_weight_reaches_every_training_batch(llama, tmp_path, monkeypatch):
    # Tiny backbones end in a norm that leaves every answer's features one length, so their
    # rewards never drift for centring to correct: what is checked is that the weight reaches
    # the loss (whose effect the test above pins down).
    weights: list[float] = []

    def spying_loss(chosen, rejected, batch, center_rewards=0.0):
        weights.append(center_rewards)
        return pair_loss(chosen, rejected, batch, center_rewards)

    monkeypatch.setattr("training.engine.reward.pair_loss", spying_loss)
    config = small_config(llama, max_steps=4, center_rewards=0.01, eval_fraction=0.0)
    train_reward(separable_rows(16), config, tmp_path / "rm")
    assert weights == [0.01] * 4

"""LoRA DPO on a tiny random Llama: it learns, touches only the adapter, resumes and cancels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.engine.tiny import save_tiny_llama, separable_rows
from training.engine.config import DPOConfig
from training.engine.data import PreferenceRow
from training.engine.dpo import decided_rows, train_dpo
from training.engine.models import ARTIFACT_FILE, ArtifactError, load_policy, read_artifact
from training.engine.runtime import CHECKPOINT_DIR, Callbacks, RunCancelled


class Crash(Exception):
    """Stands in for a killed worker."""


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


def small_config(base: Path, **overrides) -> DPOConfig:
    values = dict(
        base_model=str(base),
        max_steps=12,
        batch_size=4,
        learning_rate=5e-3,
        warmup_ratio=0.0,
        eval_every=4,
        checkpoint_every=2,
        max_length=32,
        max_prompt_length=16,
        precision="fp32",
    )
    return DPOConfig(**{**values, **overrides})


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_loss_falls_and_only_lora_weights_change(base, tmp_path):
    losses: list[float] = []
    callbacks = Callbacks(
        on_metrics=lambda step, split, m: losses.append(m["loss"]) if split == "train" else None
    )
    result = train_dpo(
        separable_rows(48), small_config(base), tmp_path / "out", callbacks=callbacks
    )

    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < losses[0] - 0.02
    assert result.eval_metrics["rewards/accuracy"] > 0.5
    trained, _ = load_policy(str(base), adapter=tmp_path / "out")
    fresh, _ = load_policy(str(base))
    trained_state = trained.get_base_model().state_dict()
    lora_changed = [
        name
        for name, value in trained_state.items()
        if "lora_B" in name and value.abs().sum() > 0  # lora_B starts at zero
    ]
    assert lora_changed
    for name, value in fresh.state_dict().items():
        peft_name = name.replace(".weight", ".base_layer.weight")
        frozen = trained_state.get(name, trained_state.get(peft_name))
        assert torch.equal(frozen, value), f"base weight {name} changed"


def test_artifact_is_complete_and_checkpoint_removed(base, tmp_path):
    train_dpo(separable_rows(16), small_config(base, max_steps=2), tmp_path / "out")
    info = read_artifact(tmp_path / "out", expected=("policy-adapter",))
    assert info["base_model"] == str(base)
    assert (tmp_path / "out" / "tandem_config.json").exists()
    assert not (tmp_path / "out" / CHECKPOINT_DIR).exists()


def test_folder_without_marker_is_refused(base, tmp_path):
    train_dpo(separable_rows(16), small_config(base, max_steps=2), tmp_path / "out")
    (tmp_path / "out" / ARTIFACT_FILE).unlink()
    with pytest.raises(ArtifactError, match="interrupted run"):
        load_policy(str(base), adapter=tmp_path / "out")


def test_killed_run_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_ends(base, tmp_path):
    rows, config = separable_rows(40), small_config(base, max_steps=8)
    train_dpo(rows, config, tmp_path / "unbroken")

    def crash_at_step_5(step: int, total: int) -> None:
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train_dpo(
            rows, config, tmp_path / "broken", callbacks=Callbacks(on_progress=crash_at_step_5)
        )
    assert not (tmp_path / "broken" / ARTIFACT_FILE).exists()
    resumed = train_dpo(rows, config, tmp_path / "broken")

    assert resumed.resumed_from_step == 4
    unbroken, broken = adapter_weights(tmp_path / "unbroken"), adapter_weights(tmp_path / "broken")
    for name, value in unbroken.items():
        torch.testing.assert_close(broken[name], value, rtol=1e-4, atol=1e-6)


def test_cancel_stops_within_a_step_and_keeps_a_checkpoint(base, tmp_path):
    seen: list[int] = []
    callbacks = Callbacks(
        on_progress=lambda step, total: seen.append(step), should_stop=lambda: len(seen) >= 3
    )
    with pytest.raises(RunCancelled, match="step 3 of 12"):
        train_dpo(separable_rows(48), small_config(base), tmp_path / "out", callbacks=callbacks)
    assert seen == [1, 2, 3]
    assert (tmp_path / "out" / CHECKPOINT_DIR).exists()
    assert not (tmp_path / "out" / ARTIFACT_FILE).exists()


def test_iterative_round_starts_from_the_previous_adapter(base, tmp_path):
    train_dpo(separable_rows(32), small_config(base, max_steps=4), tmp_path / "round1")
    config = small_config(
        base, max_steps=2, init_adapter=str(tmp_path / "round1"), reference="init"
    )
    train_dpo(separable_rows(32, seed=1), config, tmp_path / "round2")
    first, second = adapter_weights(tmp_path / "round1"), adapter_weights(tmp_path / "round2")
    assert first.keys() == second.keys()
    assert any(not torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "robust"])
def test_other_dpo_losses_train(base, tmp_path, loss_type):
    smoothing = 0.1 if loss_type == "robust" else 0.0
    result = train_dpo(
        separable_rows(16),
        small_config(base, max_steps=3, loss_type=loss_type, label_smoothing=smoothing),
        tmp_path / "out",
    )
    assert torch.isfinite(torch.tensor(result.train_metrics["loss"]))


def test_ties_are_dropped_and_reversed_targets_turned_around():
    rows = [
        PreferenceRow(prompt="p", chosen="a", rejected="b", target=1.0),
        PreferenceRow(prompt="p", chosen="a", rejected="b", target=0.5),
        PreferenceRow(prompt="p", chosen="a", rejected="b", target=0.0),
    ]
    decided = decided_rows(rows)
    assert [(row.chosen, row.rejected) for row in decided] == [("a", "b"), ("b", "a")]


def test_gradient_accumulation_counts_optimizer_steps(base, tmp_path):
    progress: list[int] = []
    rates: list[float] = []
    callbacks = Callbacks(
        on_progress=lambda step, total: progress.append(step),
        on_metrics=lambda step, split, m: (
            rates.append(m["learning_rate"]) if split == "train" else None
        ),
    )
    config = small_config(base, max_steps=3, grad_accum_steps=2, warmup_ratio=0.0)
    result = train_dpo(separable_rows(40), config, tmp_path / "out", callbacks=callbacks)
    assert progress == [1, 2, 3] and result.steps == 3
    # Cosine over 3 optimizer steps: the rate falls once per optimizer step, not per micro-batch.
    assert rates[0] > rates[1] > rates[2] == 0.0


def test_bf16_autocast_run_trains_the_fp32_adapter(base, tmp_path):
    """Frozen weights in bf16 and LoRA inputs left to autocast: the adapter still learns."""
    metrics: list[dict] = []
    callbacks = Callbacks(on_metrics=lambda step, split, m: metrics.append(m))
    train_dpo(
        separable_rows(32),
        small_config(base, precision="bf16", max_steps=4, eval_every=100),
        tmp_path / "out",
        callbacks=callbacks,
    )
    weights = adapter_weights(tmp_path / "out")
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)
    assert len(metrics) >= 4 and all(m["loss"] == m["loss"] for m in metrics)  # no NaN


def test_dpo_with_only_ties_fails_with_a_message_instead_of_looping(tmp_path):
    base = save_tiny_llama(tmp_path / "tiny")
    ties = [PreferenceRow("Q?", "a", "b", target=0.5) for _ in range(4)]
    config = DPOConfig(base_model=str(base), max_steps=2, precision="fp32", max_length=32,
                       max_prompt_length=16)  # fmt: skip
    with pytest.raises(ValueError, match="Nothing to train on"):
        train_dpo(ties, config, tmp_path / "out")

"""LoRA SFT on a tiny random Llama: it learns, scores only answer tokens, packs without changing
a demonstration's loss, touches only the adapter, resumes, cancels, and hands DPO its adapter;
the demonstration reader takes TRL's formats and reports bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from tests.engine.tiny import separable_rows, tiny_llama_config, tiny_tokenizer
from training.engine.config import DPOConfig, SFTConfig
from training.engine.data import (
    DataError,
    DemonstrationRow,
    encode_completions,
    pack_rows,
    read_demonstration_jsonl,
)
from training.engine.dpo import train_dpo
from training.engine.losses import sft_loss
from training.engine.models import ARTIFACT_FILE, load_policy, read_artifact
from training.engine.runtime import CHECKPOINT_DIR, Callbacks, RunCancelled
from training.engine.sft import CompletionLogprobs, train_sft


class Crash(Exception):
    """Stands in for a killed worker."""


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """tiny.py's Llama with wider embeddings. At the usual 0.02 scale its tied embeddings keep
    every logit within about +-0.6, so no adapter can make an answer likely and SFT's loss stays
    near log(vocabulary); DPO, which only compares answers, does not mind."""
    folder = tmp_path_factory.mktemp("tiny") / "llama"
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(5)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def demonstrations(count: int, *, seed: int = 0) -> list[DemonstrationRow]:
    """Random prompts, answers that always open with "good yes": easy to imitate."""
    return [
        DemonstrationRow(prompt=row.prompt, completion=row.chosen)
        for row in separable_rows(count, seed=seed)
    ]


def small_config(base: Path, **overrides) -> SFTConfig:
    values = dict(
        base_model=str(base),
        max_steps=12,
        batch_size=4,
        learning_rate=1e-2,
        warmup_ratio=0.0,
        eval_every=4,
        checkpoint_every=2,
        max_length=48,
        max_prompt_length=24,
        precision="fp32",
    )
    return SFTConfig(**{**values, **overrides})


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


# --- the loop ----------------------------------------------------------------------------------


def test_loss_falls_and_only_lora_weights_change(base, tmp_path):
    losses: list[float] = []
    callbacks = Callbacks(
        on_metrics=lambda step, split, m: losses.append(m["loss"]) if split == "train" else None
    )
    result = train_sft(
        demonstrations(48), small_config(base), tmp_path / "out", callbacks=callbacks
    )

    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5
    assert result.eval_metrics["loss"] < losses[0] - 0.5
    info = read_artifact(tmp_path / "out", expected=("policy-adapter",))
    assert info["demonstrations"] == 48
    trained, _ = load_policy(str(base), adapter=tmp_path / "out")
    fresh, _ = load_policy(str(base))
    trained_state = trained.get_base_model().state_dict()
    assert any(
        value.abs().sum() > 0 for name, value in trained_state.items() if "lora_B" in name
    )  # lora_B starts at zero
    for name, value in fresh.state_dict().items():
        peft_name = name.replace(".weight", ".base_layer.weight")
        frozen = trained_state.get(name, trained_state.get(peft_name))
        assert torch.equal(frozen, value), f"base weight {name} changed"


def test_killed_run_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_ends(base, tmp_path):
    rows, config = demonstrations(40), small_config(base, max_steps=6)
    train_sft(rows, config, tmp_path / "unbroken")

    def crash_at_step_3(step: int, total: int) -> None:
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        train_sft(
            rows, config, tmp_path / "broken", callbacks=Callbacks(on_progress=crash_at_step_3)
        )
    assert not (tmp_path / "broken" / ARTIFACT_FILE).exists()
    resumed = train_sft(rows, config, tmp_path / "broken")

    assert resumed.resumed_from_step == 2
    assert not (tmp_path / "broken" / CHECKPOINT_DIR).exists()
    unbroken, broken = adapter_weights(tmp_path / "unbroken"), adapter_weights(tmp_path / "broken")
    for name, value in unbroken.items():
        torch.testing.assert_close(broken[name], value, rtol=1e-4, atol=1e-6)


def test_cancel_stops_within_a_step_and_keeps_a_checkpoint(base, tmp_path):
    seen: list[int] = []
    callbacks = Callbacks(
        on_progress=lambda step, total: seen.append(step), should_stop=lambda: len(seen) >= 2
    )
    with pytest.raises(RunCancelled, match="step 2 of 12"):
        train_sft(demonstrations(48), small_config(base), tmp_path / "out", callbacks=callbacks)
    assert seen == [1, 2]
    assert (tmp_path / "out" / CHECKPOINT_DIR).exists()
    assert not (tmp_path / "out" / ARTIFACT_FILE).exists()


def test_dpo_starts_from_the_sft_adapter_and_sft_can_continue_it(base, tmp_path):
    train_sft(demonstrations(16), small_config(base, max_steps=2), tmp_path / "sft")
    config = DPOConfig(
        base_model=str(base), max_steps=2, batch_size=4, precision="fp32", max_length=48,
        max_prompt_length=24, init_adapter=str(tmp_path / "sft"), reference="init",
    )  # fmt: skip
    train_dpo(separable_rows(16), config, tmp_path / "dpo")
    sft, dpo = adapter_weights(tmp_path / "sft"), adapter_weights(tmp_path / "dpo")
    assert sft.keys() == dpo.keys()
    assert any(not torch.equal(sft[name], dpo[name]) for name in sft)

    again = small_config(base, max_steps=1, init_adapter=str(tmp_path / "sft"))
    train_sft(demonstrations(8, seed=1), again, tmp_path / "sft2")
    assert adapter_weights(tmp_path / "sft2").keys() == sft.keys()


# --- what is scored: answer tokens only, the same packed or not -----------------------------------


@pytest.fixture(scope="module")
def policy(base):
    model, tokenizer = load_policy(str(base), lora=small_config(base).lora, trainable=True)
    with torch.no_grad():  # a non-zero adapter, so the LoRA path counts too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    return model, tokenizer


def mixed_items(tokenizer):
    rows = [
        DemonstrationRow("w1 w2 w3 w4 w5 w6", "good yes w7 w8 w9 w10 w11"),
        DemonstrationRow("w12", "no"),
        DemonstrationRow("w13 w14", ""),  # an empty answer is still its eos
        DemonstrationRow([{"role": "user", "content": "w15"}], "bad w16 w17"),
    ]
    return encode_completions(rows, tokenizer, max_length=48, max_prompt_length=24)


def test_only_answer_tokens_are_targets_of_the_loss(policy):
    """The batch loss equals a per-token mean over answer tokens taken from the model's full
    logits; a loss that also scored prompt tokens would be a different number."""
    model, tokenizer = policy
    items = mixed_items(tokenizer)
    answer_logps, all_logps, answer_tokens, all_tokens = 0.0, 0.0, 0, 0
    for item in items:
        ids = torch.tensor([item.prompt_ids + item.completion_ids])
        with torch.no_grad():
            token_logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        token_logps = token_logps.gather(-1, ids[0, 1:, None])[:, 0]  # predicts token t + 1
        answer = token_logps[len(item.prompt_ids) - 1 :]
        answer_logps += answer.sum().item()
        answer_tokens += len(answer)
        all_logps += token_logps.sum().item()
        all_tokens += len(token_logps)
    by_hand = -answer_logps / answer_tokens
    # Scoring the prompt too would give a number far outside the tolerance below.
    assert abs(by_hand - -all_logps / all_tokens) > 0.05

    for packing in (True, False):
        scorer = CompletionLogprobs(model, packing=packing, max_length=48)
        batch = scorer.collate(items, tokenizer.pad_token_id)
        with torch.no_grad():
            loss, _ = sft_loss(scorer(batch), batch["answer_lengths"])
        assert loss.item() == pytest.approx(by_hand, abs=1e-4), f"packing={packing}"


def test_packing_gives_each_demonstration_the_loss_it_has_alone_and_the_same_gradient(policy):
    model, tokenizer = policy
    items = mixed_items(tokenizer)
    results = {}
    for packing in (True, False):
        scorer = CompletionLogprobs(model, packing=packing, max_length=48)
        batch = scorer.collate(items, tokenizer.pad_token_id)
        logps = scorer(batch)
        loss, _ = sft_loss(logps, batch["answer_lengths"])
        lora = [p for n, p in model.named_parameters() if "lora_A" in n]
        grads = torch.autograd.grad(loss, lora)
        results[packing] = (batch["input_ids"].shape[0], logps.detach(), grads)
    packed_rows, packed_logps, packed_grads = results[True]
    single_rows, single_logps, single_grads = results[False]
    assert packed_rows < single_rows == len(items)  # packing happened
    torch.testing.assert_close(packed_logps, single_logps, rtol=1e-4, atol=1e-4)
    for packed, single in zip(packed_grads, single_grads, strict=True):
        torch.testing.assert_close(packed, single, rtol=1e-3, atol=1e-5)


def test_pack_rows_fills_rows_without_overflow_and_pads_least():
    assert pack_rows([100, 30, 30, 20], 256) == [[0, 1, 2, 3]]
    # First-fit would give rows of 210 and 70 (a 210-wide batch of 2 rows); even rows pad nothing.
    assert [len(row) for row in pack_rows([70, 70, 70, 70], 256)] == [2, 2]
    rows = pack_rows([200, 150, 90, 60, 10], 256)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
    assert all(sum([200, 150, 90, 60, 10][i] for i in row) <= 256 for row in rows)
    assert len(rows) == 3  # no two rows can hold 510 tokens: 200 fits with at most 56 more
    with pytest.raises(ValueError, match="longer than the row capacity"):
        pack_rows([300], 256)


# --- reading demonstrations ------------------------------------------------------------------


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))  # fmt: skip
    return path


def test_reader_takes_messages_and_prompt_completion_rows(tmp_path):
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "bye"},
    ]
    path = write_lines(tmp_path / "sft.jsonl", [
        {"messages": conversation},
        {"prompt": "Say yes", "completion": "yes"},
        {"prompt": [{"role": "user", "content": "Q"}],
         "completion": [{"role": "assistant", "content": "A"}]},
        "",
        {"prompt": "Stay silent", "completion": ""},
    ])  # fmt: skip
    rows = read_demonstration_jsonl(path)
    assert rows == [
        DemonstrationRow(conversation[:-1], "bye", 1),  # earlier turns are the prompt
        DemonstrationRow("Say yes", "yes", 2),
        DemonstrationRow([{"role": "user", "content": "Q"}], "A", 3),
        DemonstrationRow("Stay silent", "", 5),  # an empty completion is data
    ]


@pytest.mark.parametrize(
    ("bad_line", "fault"),
    [
        ({"prompt": "Q"}, 'needs "messages", or "prompt" and "completion"'),
        ({"text": "just text"}, '"text" rows have no prompt'),
        ({"messages": [{"role": "user", "content": "Q"}]}, "must end with the assistant"),
        ({"messages": [{"role": "assistant", "content": "A"}]}, "at least one turn"),
        ({"prompt": "", "completion": "A"}, "every demonstration needs a prompt"),
        ({"prompt": "Q", "completion": 3}, '"completion" must be a string'),
        ("[1, 2]", "expected a JSON object"),
        ("{not json", "invalid JSON"),
    ],
)
def test_bad_rows_are_reported_naming_the_line_and_the_rest_kept(tmp_path, bad_line, fault):
    path = write_lines(tmp_path / "sft.jsonl", [{"prompt": "Q", "completion": "A"}, bad_line])
    skipped: list[str] = []
    rows = read_demonstration_jsonl(path, on_skip=skipped.append)
    assert [row.completion for row in rows] == ["A"]
    assert len(skipped) == 1 and "line 2" in skipped[0] and fault in skipped[0]
    with pytest.raises(DataError, match=fault):
        read_demonstration_jsonl(path, strict=True)


def test_a_file_without_one_demonstration_is_a_data_error(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [{"prompt": "Q"}])
    with pytest.raises(DataError, match=r"no demonstration rows \(1 skipped\)"):
        read_demonstration_jsonl(path)

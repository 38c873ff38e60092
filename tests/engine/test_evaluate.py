"""What the promotion gates measure, on a tiny model: KL, held-out accuracy, win rate."""

from __future__ import annotations

import torch

from tests.engine.tiny import save_tiny_llama, separable_rows
from training.engine import runtime
from training.engine.config import DPOConfig, GenerationConfig, LoraSettings
from training.engine.dpo import train_dpo
from training.engine.evaluate import answer_kl, evaluate_policy, win_rate
from training.engine.models import load_policy

FP32 = GenerationConfig(max_new_tokens=6, samples_per_prompt=2, precision="fp32", seed=3)


def lora_model(tmp_path):
    base = save_tiny_llama(tmp_path / "base")
    model, tokenizer = load_policy(str(base), lora=LoraSettings(r=4, alpha=8))
    return model, tokenizer


def test_answer_kl_is_zero_for_an_untrained_adapter_and_exact_otherwise(tmp_path):
    model, _ = lora_model(tmp_path)
    accelerator = runtime.make_accelerator("fp32", 1)
    sequences, prompt_lengths = [[5, 6, 7, 8, 9], [5, 6, 10]], [2, 2]
    untrained = answer_kl(model, sequences, prompt_lengths, 2, 0, accelerator)
    assert torch.allclose(untrained, torch.zeros(2), atol=1e-6)  # LoRA starts as the identity

    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    kl = answer_kl(model, sequences, prompt_lengths, 2, 0, accelerator)

    # By hand for the first sequence: positions 1, 2 and 3 predict its answer tokens 7, 8, 9.
    with torch.no_grad():
        ids = torch.tensor([sequences[0]])
        policy = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        with model.disable_adapter():
            reference = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    expected = sum((policy[t].exp() * (policy[t] - reference[t])).sum() for t in (1, 2, 3))
    assert kl[1].item() > 0 and kl[0].item() > 0
    assert abs(kl[0].item() - expected.item()) < 1e-4


def test_win_rate_counts_ties_as_half():
    assert win_rate(torch.tensor([2.0, 1.0, 0.0, 5.0]), torch.tensor([1.0, 1.0, 3.0, 0.0])) == 0.625


def test_evaluate_policy_measures_a_trained_adapter_against_the_base(tmp_path):
    base = save_tiny_llama(tmp_path / "base")
    rows = separable_rows(24)
    config = DPOConfig(
        base_model=str(base),
        max_steps=6,
        batch_size=4,
        learning_rate=5e-3,
        max_length=32,
        max_prompt_length=16,
        precision="fp32",
        eval_fraction=0.0,
    )
    train_dpo(rows, config, tmp_path / "adapter")
    prompts = ["a b c", "d e f", "g h"]
    sampled = evaluate_policy(
        base_model=str(base),
        candidate_adapter=tmp_path / "adapter",
        parent_adapter=None,
        prompts=prompts,
        generation=FP32,
        heldout_rows=rows[:8],
    )
    assert len(sampled.pairs) == 6 and sampled.kl > 0
    assert sampled.heldout_pairs == 8 and sampled.heldout_accuracy > 0.5  # it learnt these
    assert sampled.win_rate is None  # no reward model given

    # The parent's served answers can stand in for sampling the parent again.
    served = [["served one", "served two"]] * 3
    reused = evaluate_policy(
        base_model=str(base),
        candidate_adapter=tmp_path / "adapter",
        parent_adapter=None,
        prompts=prompts,
        generation=FP32,
        parent_answers=served,
    )
    assert [p.parent for p in reused.pairs] == ["served one", "served two"] * 3
    assert [p.candidate for p in reused.pairs] == [p.candidate for p in sampled.pairs]

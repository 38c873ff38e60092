"""Packed pair batches: the prompt computed once gives the numbers two full sequences give."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM, LlamaForSequenceClassification

from tests.engine.tiny import VOCAB, save_tiny_bert, tiny_llama_config
from training.engine.config import LoraSettings
from training.engine.data import EncodedPair, collate_packed_pairs
from training.engine.models import (
    PolicyLogprobs,
    RewardScorer,
    add_lora,
    load_reward_backbone,
    packs_pairs,
)

# pair 0: prompt [5, 6], chosen [7, 2], rejected [8, 9, 2] -> row of 7 tokens
# pair 1: prompt [5], chosen [7, 7, 7, 2], rejected [9, 2] -> row of 7 tokens
PAIRS = [
    EncodedPair([5, 6], [7, 2], [8, 9, 2], weight=1.0, margin=0.0, target=1.0, row=0),
    EncodedPair([5], [7, 7, 7, 2], [9, 2], weight=2.0, margin=0.5, target=0.5, row=1),
]


def test_packed_rows_hold_the_prompt_once_and_restart_positions_for_the_rejected_answer():
    batch = collate_packed_pairs(PAIRS, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2, 8, 9, 2], [5, 7, 7, 7, 2, 9, 2]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 3, 4], [0, 1, 2, 3, 4, 1, 2]]
    assert batch["answer_lengths"].tolist() == [2, 4, 3, 2]  # chosen 0, chosen 1, rejected 0, 1
    assert batch["num_tokens"] == 7 + 7
    assert batch["weight"].tolist() == [1.0, 2.0]


def test_the_rejected_answer_sees_the_prompt_and_itself_but_not_the_chosen_one():
    mask = collate_packed_pairs(PAIRS, pad_id=0)["attention_mask"]
    assert mask.shape == (2, 1, 7, 7) and mask.dtype == torch.bool
    row = mask[0, 0].int().tolist()
    assert row[4] == [1, 1, 0, 0, 1, 0, 0]  # rejected's first token: prompt + itself
    assert row[6] == [1, 1, 0, 0, 1, 1, 1]
    assert row[3] == [1, 1, 1, 1, 0, 0, 0]  # chosen's last token: plain causal


def test_each_answer_token_is_predicted_from_the_token_before_it_or_the_prompt_end():
    batch = collate_packed_pairs(PAIRS, pad_id=0)
    width = 7
    flat = batch["input_ids"].flatten()
    by_owner: dict[int, list[tuple[int, int]]] = {}
    for target, predictor, owner in zip(
        batch["targets"].tolist(),
        batch["predictors"].tolist(),
        batch["owners"].tolist(),
        strict=True,
    ):
        by_owner.setdefault(owner, []).append((target, predictor))
    answers = [PAIRS[0].chosen_ids, PAIRS[1].chosen_ids, PAIRS[0].rejected_ids]
    answers.append(PAIRS[1].rejected_ids)
    for owner, answer in enumerate(answers):
        assert [int(flat[t]) for t, _ in by_owner[owner]] == answer
    # Pair 0's rejected answer starts at column 4; its first token is predicted by the prompt's
    # last (column 1), the next ones by the token before them.
    assert by_owner[2] == [(4, 1), (5, 4), (6, 5)]
    assert by_owner[3] == [(width + 5, width + 0), (width + 6, width + 5)]
    assert batch["last_positions"].tolist() == [3, width + 4, 6, width + 6]


def random_pairs(count: int, seed: int) -> list[EncodedPair]:
    generator = torch.Generator().manual_seed(seed)

    def ids(low: int, high: int) -> list[int]:
        length = int(torch.randint(low, high, (1,), generator=generator))
        return torch.randint(4, len(VOCAB), (length,), generator=generator).tolist()

    return [
        EncodedPair(ids(1, 9), [*ids(0, 7), 2], [*ids(0, 12), 2], 1.0, 0.0, 1.0, row)
        for row in range(count)
    ]


def lora_policy(attention: str = "sdpa") -> torch.nn.Module:
    torch.manual_seed(0)
    config = tiny_llama_config()
    config._attn_implementation = attention
    model = add_lora(LlamaForCausalLM(config), LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # LoRA's B starts at zero; give the adapter something to say
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return model


def scores_and_grads(scorer: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, list]:
    scorer.zero_grad()
    scores = scorer(batch)
    (scores * torch.linspace(0.5, 1.5, scores.shape[0])).sum().backward()
    grads = [p.grad.clone() for p in scorer.parameters() if p.requires_grad]
    return scores.detach(), grads


def assert_packing_changes_nothing(scorer_class, model, pairs, *, atol: float) -> None:
    """Scores and trained-weight gradients of packed rows equal those of two sequences a pair."""
    packed = scorer_class(model)
    assert packed.packed
    sequences = scorer_class(model)
    sequences.packed = False
    want, want_grads = scores_and_grads(sequences, sequences.collate(pairs, pad_id=0))
    got, got_grads = scores_and_grads(packed, packed.collate(pairs, pad_id=0))
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-5)
    assert len(got_grads) == len(want_grads) > 0
    for got_grad, want_grad in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got_grad, want_grad, atol=1e-5, rtol=1e-4)


def test_packed_log_probs_and_their_gradients_equal_two_sequences_per_pair():
    assert_packing_changes_nothing(
        PolicyLogprobs, lora_policy(), random_pairs(5, seed=1), atol=1e-4
    )


def test_packed_rewards_equal_two_sequences_per_pair():
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(num_labels=1))
    assert_packing_changes_nothing(RewardScorer, model, random_pairs(5, seed=2), atol=1e-5)


def test_only_decoders_with_a_mask_taking_attention_pack(tmp_path):
    assert packs_pairs(lora_policy("sdpa"))
    # Eager attention adds the mask as numbers: a boolean one would be misread, so no packing.
    assert not packs_pairs(lora_policy("eager"))
    # An encoder's prompt sees the answer after it: nothing to share.
    bert, _ = load_reward_backbone(
        str(save_tiny_bert(tmp_path / "bert")), use_lora=False, lora=LoraSettings()
    )
    assert not packs_pairs(bert)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_either_layout_scores_the_same_pairs(attention):
    """A model that cannot pack falls back to two sequences per pair, with the same result."""
    model = lora_policy(attention)
    pairs = random_pairs(3, seed=3)
    scorer = PolicyLogprobs(model)
    with torch.no_grad():
        got = scorer(scorer.collate(pairs, pad_id=0))
        reference = PolicyLogprobs(lora_policy("sdpa"))
        reference.packed = False
        want = reference(reference.collate(pairs, pad_id=0))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)

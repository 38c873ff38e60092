"""Row attention: the same numbers as PyTorch's SDPA on packed pair masks, used where it pays."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForSequenceClassification

from tests.engine.test_packing import lora_policy, random_pairs
from tests.engine.tiny import tiny_llama_config
from training.engine import attention
from training.engine.attention import RowAttention, pair_attention, rows_pay_off
from training.engine.data import collate_packed_pairs
from training.engine.models import PolicyLogprobs, RewardScorer


def pair_mask_inputs(dtype: torch.dtype, seed: int = 0):
    """q, k, v and a packed-pair mask (two rows, grouped-query heads 4 over 2)."""
    generator = torch.Generator().manual_seed(seed)
    batch, heads, kv_heads, length, dim = 2, 4, 2, 11, 8
    mask = torch.ones(length, length, dtype=torch.bool).tril().repeat(batch, 1, 1)
    mask[0, 6:, 2:6] = False  # row 0: prompt 2, chosen 4, rejected 5
    mask[1, 4:9, 1:4] = False  # row 1: prompt 1, chosen 3, rejected 5, then 2 pads

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(dtype).requires_grad_()

    q = randn(batch, heads, length, dim)
    k, v = randn(batch, kv_heads, length, dim), randn(batch, kv_heads, length, dim)
    return q, k, v, mask[:, None]


def output_and_grads(attend, q, k, v, mask) -> list[torch.Tensor]:
    for tensor in (q, k, v):
        tensor.grad = None
    out = attend(q, k, v, mask)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out).to(out.dtype)
    (out * weights).sum().backward()
    return [t.float() for t in (out, q.grad, k.grad, v.grad)]


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def rows(q, k, v, mask):
    return RowAttention.apply(q, k, v, mask, q.shape[-1] ** -0.5)


def test_row_attention_and_its_gradients_equal_sdpa_in_fp32():
    inputs = pair_mask_inputs(torch.float32)
    want = output_and_grads(sdpa, *inputs)
    got = output_and_grads(rows, *inputs)
    for got_tensor, want_tensor in zip(got, want, strict=True):
        torch.testing.assert_close(got_tensor, want_tensor, atol=1e-5, rtol=1e-5)


def test_row_attention_in_bf16_is_as_close_to_fp32_as_sdpa_in_bf16():
    reference = output_and_grads(sdpa, *pair_mask_inputs(torch.float32))
    flash = output_and_grads(sdpa, *pair_mask_inputs(torch.bfloat16))
    mine = output_and_grads(rows, *pair_mask_inputs(torch.bfloat16))
    for want, theirs, ours in zip(reference, flash, mine, strict=True):
        their_error = (theirs - want).norm() / want.norm()
        our_error = (ours - want).norm() / want.norm()
        assert our_error < max(2 * their_error, 0.01)


def test_row_attention_is_chosen_for_bf16_on_the_cpu_only():
    q, k, _, mask = pair_mask_inputs(torch.bfloat16)
    assert rows_pay_off(q, k, mask, dropout=0.0)
    assert not rows_pay_off(q.float(), k.float(), mask, dropout=0.0)  # flash is faster in fp32
    assert not rows_pay_off(q, k, None, dropout=0.0)
    assert not rows_pay_off(q, k, mask, dropout=0.1)
    assert not rows_pay_off(q[:, :, -1:], k, mask, dropout=0.0)  # a cached decoding step


def test_row_attention_leaves_batches_whose_saved_scores_would_be_too_large_to_sdpa(monkeypatch):
    q, k, _, mask = pair_mask_inputs(torch.bfloat16)
    batch, heads, length = q.shape[:3]
    monkeypatch.setattr(attention, "ROW_ATTENTION_MAX_SCORES", batch * heads * length**2)
    assert rows_pay_off(q, k, mask, dropout=0.0)
    monkeypatch.setattr(attention, "ROW_ATTENTION_MAX_SCORES", batch * heads * length**2 - 1)
    assert not rows_pay_off(q, k, mask, dropout=0.0)


@pytest.fixture
def row_attention_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = RowAttention.apply

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(attention.RowAttention, "apply", counted)
    return calls


def bf16_scores_and_grads(scorer: torch.nn.Module, batch: dict):
    scorer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = scorer(batch)
    (scores.float() * torch.linspace(0.5, 1.5, scores.shape[0])).sum().backward()
    return scores.detach().float(), [p.grad.clone() for p in scorer.parameters() if p.requires_grad]


@pytest.mark.parametrize("scorer_class", [PolicyLogprobs, RewardScorer])
def test_packed_bf16_forward_runs_every_layer_through_row_attention(
    scorer_class, row_attention_calls, monkeypatch
):
    if scorer_class is PolicyLogprobs:
        model = lora_policy()
    else:
        torch.manual_seed(0)
        model = LlamaForSequenceClassification(tiny_llama_config(num_labels=1))
    scorer = scorer_class(model)
    batch = collate_packed_pairs(random_pairs(4, seed=5), pad_id=0)
    got, got_grads = bf16_scores_and_grads(scorer, batch)
    layers = model.config.num_hidden_layers
    assert len(row_attention_calls) == layers
    assert model.config._attn_implementation == "sdpa"  # switched back after the forward

    monkeypatch.setattr(attention, "rows_pay_off", lambda *args: False)  # SDPA throughout
    want, want_grads = bf16_scores_and_grads(scorer, batch)
    assert len(row_attention_calls) == layers
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)
    for got_grad, want_grad in zip(got_grads, want_grads, strict=True):
        assert (got_grad - want_grad).norm() <= 0.05 * want_grad.norm() + 1e-6


def test_row_attention_scores_under_inference_mode(row_attention_calls):
    scorer = PolicyLogprobs(lora_policy())
    batch = collate_packed_pairs(random_pairs(3, seed=6), pad_id=0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = scorer(batch)
    assert row_attention_calls and torch.isfinite(scores).all()


def test_the_attention_switch_is_undone_when_the_forward_fails():
    model = lora_policy()
    with pytest.raises(RuntimeError), pair_attention(model):
        assert model.config._attn_implementation == attention.PAIR_ATTENTION
        raise RuntimeError("interrupted forward")
    assert model.config._attn_implementation == "sdpa"

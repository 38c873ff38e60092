"""Attention for packed pair batches on the CPU: plain matrix multiplies, one batch row at a time.

A packed pair row (data.collate_packed_pairs) is a few hundred tokens under a custom mask.
PyTorch's CPU flash-attention kernel is built for long sequences: at these lengths its backward
pass costs most of a training step (about half of a reward step on SmolLM2 at 446 tokens), and
it cannot skip the masked blocks. Here each row's scores are one (heads x T, T) matrix that stays
in cache: two bf16 matrix multiplies forward, four backward, a masked softmax and its fused
backward in between. A layer's attention forward and backward run 3.5x (110 tokens) to 2.4x
(450 tokens) faster than the flash kernel, 1.5x at 1,000, with the same error against an fp32
reference (bf16 scores, as in eager attention).

The scores are materialised (T x T per head), so this is for short bf16 rows on the CPU only;
everywhere else (fp32, GPUs, large batches of long rows) the layers keep PyTorch's SDPA
(`rows_pay_off`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward

PAIR_ATTENTION = "tandem_pair_rows"


class RowAttention(torch.autograd.Function):
    """softmax(q k^T * scale, masked) v, row by row, grouped-query heads stacked per key head.

    q (B, H, T, D); k, v (B, KV, T, D) with H a multiple of KV; mask (B, 1, T, T) bool, True
    where the query (row) may attend the key (column); every query must see at least one key.
    Returns (B, H, T, D).
    """

    @staticmethod
    def forward(
        ctx: Any,  # autograd's context: holds what backward needs
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor,
        scale: float,
    ) -> Tensor:
        batch, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        group = heads // kv_heads
        # The `group` query heads that share a key head become one taller matrix: one multiply.
        queries = (q * scale).reshape(batch, kv_heads, group * length, dim)
        out = q.new_empty(batch, kv_heads, group * length, dim)
        blocked = mask.logical_not()  # (B, 1, T, T)
        probs = []
        for row in range(batch):
            scores = torch.matmul(queries[row], k[row].transpose(-1, -2))  # (KV, G*T, T)
            scores.view(kv_heads, group, length, length).masked_fill_(blocked[row], float("-inf"))
            row_probs = torch.softmax(scores, dim=-1)
            torch.matmul(row_probs, v[row], out=out[row])
            probs.append(row_probs)
        ctx.save_for_backward(queries, k, v, *probs)
        ctx.scale, ctx.query_shape = scale, q.shape
        return out.view(batch, heads, length, dim)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        queries, k, v, *probs = ctx.saved_tensors
        batch, kv_heads, stacked, dim = queries.shape
        grad_out = grad_out.to(v.dtype).reshape(batch, kv_heads, stacked, dim)
        grad_q, grad_k, grad_v = torch.empty_like(queries), torch.empty_like(k), torch.empty_like(v)
        for row in range(batch):
            torch.matmul(probs[row].transpose(-1, -2), grad_out[row], out=grad_v[row])
            grad_probs = torch.matmul(grad_out[row], v[row].transpose(-1, -2))  # (KV, G*T, T)
            # p * (dp - sum(p * dp)): softmax's own fused backward; masked entries have p = 0.
            grad_scores = torch._softmax_backward_data(grad_probs, probs[row], -1, v.dtype)
            torch.matmul(grad_scores, k[row], out=grad_q[row])
            torch.matmul(grad_scores.transpose(-1, -2), queries[row], out=grad_k[row])
        grad_q = grad_q.mul_(ctx.scale).view(ctx.query_shape)
        return grad_q, grad_k, grad_v, None, None


# Row attention keeps every layer's probabilities for the backward pass (flash keeps O(T) per
# query): at most this many scores per layer, 64 MiB in bf16, e.g. 4 rows x 9 heads x 943 tokens.
ROW_ATTENTION_MAX_SCORES = 2**25


def runs_in_bf16(query: Tensor) -> bool:
    """bf16 tensors, or bf16 autocast (fp32 rotary tables can leave the queries in fp32)."""
    autocast_bf16 = (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )
    return query.dtype == torch.bfloat16 or autocast_bf16


def rows_pay_off(query: Tensor, key: Tensor, mask: Tensor | None, dropout: float) -> bool:
    """Whether RowAttention is the better choice: bf16 on the CPU, a full boolean mask, no cache,
    scores that fit ROW_ATTENTION_MAX_SCORES.

    In fp32 the flash kernel is faster (row attention runs 0.8x at 260 tokens), and GPUs have
    fused kernels that never materialise the scores.
    """
    return (
        query.device.type == "cpu"
        and runs_in_bf16(query)
        and mask is not None
        and mask.dtype == torch.bool
        and mask.dim() == 4
        and not dropout
        and query.shape[2] == key.shape[2]
        and query.shape[0] * query.shape[1] * query.shape[2] ** 2 <= ROW_ATTENTION_MAX_SCORES
    )


def row_attention_forward(
    module: torch.nn.Module,
    query: Tensor,  # (B, H, T, D)
    key: Tensor,  # (B, KV, T, D)
    value: Tensor,  # (B, KV, T, D)
    attention_mask: Tensor | None,  # (B, 1, T, T) bool
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, None]:  # (B, T, H, D), as transformers' attention functions return it
    """transformers' attention-function signature: RowAttention where it pays off, else SDPA."""
    if not rows_pay_off(query, key, attention_mask, dropout):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    query, key, value = (t.to(torch.bfloat16) for t in (query, key, value))
    # Function.apply is untyped in torch: it returns what forward does, (B, H, T, D).
    out: Tensor = RowAttention.apply(  # type: ignore[no-untyped-call]
        query, key, value, attention_mask, scale
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(PAIR_ATTENTION, row_attention_forward)


@contextlib.contextmanager
def pair_attention(model: PreTrainedModel) -> Iterator[None]:
    """Within the block, the model's attention layers use row_attention_forward.

    The layers look their attention function up by the name in the shared config on every
    forward, so switching the name for one forward switches every layer; the backward pass
    needs no lookup. Not for a model that another thread runs at the same time.
    """
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = PAIR_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before

"""Mixed precision: bf16 autocast wherever the hardware runs it fast, fp32 elsewhere."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache

import torch


@cache
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX-512 BF16 / AMX), where autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype to autocast to, or None for plain fp32. `auto` picks bf16 where it is fast."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield

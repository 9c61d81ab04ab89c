"""KV caches start as zeros that cost memory only where written."""

from __future__ import annotations

import torch

from limelight.engine.models.base import zeros


def test_lazy_zeros_are_zero_writable_and_shaped() -> None:
    cache = zeros((64, 3, 8), torch.bfloat16, torch.device("cpu"))
    assert cache.shape == (64, 3, 8) and cache.dtype == torch.bfloat16
    assert not cache.any()
    cache[5] = 1.5
    assert cache[5].eq(1.5).all() and cache.sum().item() == 1.5 * 24
    other = zeros((64, 3, 8), torch.bfloat16, torch.device("cpu"))
    assert not other.any()  # a fresh mapping each time, never another cache's memory

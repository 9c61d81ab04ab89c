"""Rotary position embeddings (the rotate-half convention used by Hugging Face weights).

Owns the inverse frequencies for the rope types limelight supports and applies them to
`[T, H, D]` query/key tensors at arbitrary absolute positions, so that prefill chunks and
decode tokens of different sequences mix freely in one step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def inverse_frequencies(rope: dict[str, Any], rotary_dim: int) -> Tensor:
    base = float(rope.get("rope_theta", 10000.0))
    inv_freq = 1.0 / base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    kind = rope.get("rope_type", "default")
    if kind == "default":
        return inv_freq.float()
    if kind == "linear":
        return (inv_freq / float(rope["factor"])).float()
    if kind == "llama3":
        return _llama3_frequencies(inv_freq, rope).float()
    raise ValueError(
        f"rope type {kind!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
    )


def _llama3_frequencies(inv_freq: Tensor, rope: dict[str, Any]) -> Tensor:
    """Llama 3.1 scaling: long wavelengths divided by `factor`, short ones kept, smooth between."""
    factor = float(rope["factor"])
    low, high = float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
    old_len = float(rope["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    inv_freq: Tensor

    def __init__(self, rope: dict[str, Any], rotary_dim: int, attention_scaling: float = 1.0):
        super().__init__()
        self.rotary_dim = rotary_dim
        self.attention_scaling = attention_scaling
        self.register_buffer("inv_freq", inverse_frequencies(rope, rotary_dim), persistent=False)
        # every layer of a step rotates at the same positions: compute cos/sin once per step
        self._cached: tuple[Tensor, torch.dtype, Tensor, Tensor] | None = None

    def forward(self, positions: Tensor, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """positions [T]; q [T, H, D], k [T, Hkv, D]; rotates the first `rotary_dim` dims."""
        cos, sin = self._cos_sin(positions, q.dtype)
        return _rotate(q, cos, sin, self.rotary_dim), _rotate(k, cos, sin, self.rotary_dim)

    def _cos_sin(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        cached = self._cached
        if cached is not None and cached[0] is positions and cached[1] == dtype:
            return cached[2], cached[3]
        freqs = positions[:, None].float() * self.inv_freq[None, :]  # [T, R/2]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]  # [T, 1, R]
        cos = (emb.cos() * self.attention_scaling).to(dtype)
        sin = (emb.sin() * self.attention_scaling).to(dtype)
        self._cached = (positions, dtype, cos, sin)
        return cos, sin


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int) -> Tensor:
    if rotary_dim == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat([rot * cos + _rotate_half(rot) * sin, rest], dim=-1)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)

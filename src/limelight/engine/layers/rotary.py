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
        """cos and a signed sin, [T, 1, R] each: the sin's first half is negated, so that
        rotate-half becomes a swap of halves with no negation (`_swap_halves`)."""
        if torch.compiler.is_compiling():  # traced: fused into the rotation, no cache
            return self._compute_cos_sin(positions, dtype)
        cached = self._cached
        if cached is not None and cached[0] is positions and cached[1] == dtype:
            return cached[2], cached[3]
        cos, sin = self._compute_cos_sin(positions, dtype)
        self._cached = (positions, dtype, cos, sin)
        return cos, sin

    def _compute_cos_sin(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = positions[:, None].float() * self.inv_freq[None, :]  # [T, R/2]
        half_cos, half_sin = freqs.cos(), freqs.sin()
        cos = torch.cat([half_cos, half_cos], dim=-1)[:, None, :]  # [T, 1, R]
        sin = torch.cat([-half_sin, half_sin], dim=-1)[:, None, :]
        cos = (cos * self.attention_scaling).to(dtype)
        sin = (sin * self.attention_scaling).to(dtype)
        return cos, sin


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int) -> Tensor:
    """x * cos + rotate_half(x) * sin, where rotate_half(x) = [-x2, x1] = [x2, x1] * [-1, 1]
    and the sign is already in `sin`."""
    if rotary_dim == x.shape[-1]:
        return x * cos + _swap_halves(x) * sin
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat([rot * cos + _swap_halves(rot) * sin, rest], dim=-1)


def _swap_halves(x: Tensor) -> Tensor:
    """[x1, x2] → [x2, x1] along the last dim.  `roll` is one kernel, the fastest for a
    decode step's few tokens (8 vs 13 us), and slow for a prompt chunk's many (1.7 vs 0.3 ms
    for 1,000 tokens × 9 heads), where joining the two slices wins; the values are the same.
    A compiled step fuses either into its loops: it joins, with no branch on the token count
    (which would split its graph in two)."""
    half = x.shape[-1] // 2
    if not torch.compiler.is_compiling() and x.shape[0] <= 16:
        return x.roll(half, dims=-1)
    return torch.cat([x[..., half:], x[..., :half]], dim=-1)

"""Linear attention with a per-head exponential decay (MiniMax-01's "lightning attention").

Instead of a KV cache each sequence carries a state `S [H, D, D]`; one token advances it as

    S_t = exp(-s_h) · S_{t-1} + k_tᵀ v_t        o_t = q_t · S_t

so a token sees itself (the diagonal is included) and the past fades at a fixed rate per
head.  `LinearAttention` owns one layer's state pool (a row per running sequence) and its
snapshot pool (saved states a sequence can later resume from, the linear-attention analogue
of a cached prefix), and computes a whole batched step on the padded `[B, H, L, D]` layout,
chunk by chunk, without a loop over tokens.  Padding tokens neither decay nor add to a state.

It does not own projections, activations, norms or gates (the model's), nor which rows and
snapshots a sequence uses (the runner's, through `ForwardBatch`).  Written by hand because
the decayed recurrence with pooled states is the engine's own; the fused kernels that exist
for it are CUDA/Triton only and do not know about the pools.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from limelight.engine.layers.batch import ForwardBatch

CHUNK_SIZE = 64


class LinearAttention(nn.Module):
    slopes: Tensor  # [H] decay rate s_h per head
    state_pool: Tensor  # [num_state_slots, H, D, D] float32, allocated by the model runner
    snapshot_pool: Tensor  # [num_snapshots, H, D, D] float32

    def __init__(
        self, num_heads: int, head_dim: int, slopes: Tensor, chunk_size: int = CHUNK_SIZE
    ) -> None:
        super().__init__()
        assert slopes.shape == (num_heads,), "one decay rate per head"
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.chunk_size = chunk_size
        self.register_buffer("slopes", slopes.float(), persistent=False)
        self.state_pool = self.snapshot_pool = torch.empty(0)

    def allocate_states(
        self, num_state_slots: int, num_snapshots: int, device: torch.device
    ) -> None:
        shape = (self.num_heads, self.head_dim, self.head_dim)
        self.state_pool = torch.zeros((num_state_slots, *shape), device=device)
        self.snapshot_pool = torch.zeros((num_snapshots, *shape), device=device)

    def reset_states(self, slots: Tensor) -> None:
        """Zero the state rows of new sequences."""
        self.state_pool[slots] = 0.0

    def forward(self, q: Tensor, k: Tensor, v: Tensor, batch: ForwardBatch) -> Tensor:
        """q/k/v [T, H, D] → [T, H * D]; advances each sequence's state row in the pool."""
        self._restore(batch.state_restores)
        dtype = q.dtype
        q, k, v = (batch.to_padded(x.float()).transpose(1, 2) for x in (q, k, v))  # [B, H, L, D]
        initial = self.state_pool[batch.state_slots]  # [B, H, D, D]
        out, final = linear_attention(
            q, k, v, batch.query_valid(), self.slopes, initial, self.chunk_size
        )
        self._snapshot(batch.state_snapshots, k, v, initial)
        self.state_pool[batch.state_slots] = final
        out = out.transpose(1, 2)  # [B, L, H, D]
        return batch.to_flat(out).flatten(1).to(dtype)  # [T, H * D]

    def _restore(self, restores: list[tuple[int, int]]) -> None:
        if restores:
            device = self.state_pool.device
            slots = torch.tensor([slot for slot, _ in restores], device=device)
            snaps = torch.tensor([snap for _, snap in restores], device=device)
            self.state_pool[slots] = self.snapshot_pool[snaps]

    def _snapshot(
        self, snapshots: list[tuple[int, int, int]], k: Tensor, v: Tensor, initial: Tensor
    ) -> None:
        if snapshots:
            rows, consumed, snaps = (
                torch.tensor(column, device=k.device) for column in zip(*snapshots, strict=True)
            )
            states = state_after(k[rows], v[rows], self.slopes, initial[rows], consumed)
            self.snapshot_pool[snaps] = states


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    valid: Tensor,
    slopes: Tensor,
    state: Tensor,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """q/k/v [B, H, L, D], valid [B, L], slopes [H], state [B, H, D, D] → (o, final state).

    The step is cut into chunks along L; inside a chunk everything is a few matmuls, and
    the state at the chunk's end is carried into the next.
    """
    outputs = []
    for start in range(0, q.shape[2], chunk_size):
        part = slice(start, start + chunk_size)
        out, state = _chunk(
            q[:, :, part], k[:, :, part], v[:, :, part], valid[:, part], slopes, state
        )
        outputs.append(out)
    return torch.cat(outputs, dim=2), state


def _chunk(
    q: Tensor, k: Tensor, v: Tensor, valid: Tensor, slopes: Tensor, state: Tensor
) -> tuple[Tensor, Tensor]:
    """One chunk: o_t = e^{-s·n_t}·q_t·S_0 + Σ_{j≤t} e^{-s·(n_t−n_j)}·(q_t·k_j)·v_j.

    n_t counts the chunk's real tokens up to and including t; counting decay in whole tokens
    (rather than summing log-decays) keeps the exponents exact however long the chunk.
    """
    length = q.shape[2]
    s = slopes[None, :, None]  # [1, H, 1]
    n = valid.cumsum(-1).to(q.dtype)[:, None, :]  # [B, 1, C]
    from_start = torch.exp(-s * n)  # [B, H, C] decay of S_0 as seen at token t
    gap = n[:, :, :, None] - n[:, :, None, :]  # [B, 1, C, C] real tokens in (j, t]
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    decay = torch.exp((-s[..., None] * gap).masked_fill(~causal, float("-inf")))  # [B, H, C, C]
    scores = (q @ k.transpose(-1, -2)) * decay  # [B, H, C, C]
    out = (q * from_start[..., None]) @ state + scores @ v  # [B, H, C, D]
    to_end = torch.exp(-s * (n[:, :, -1:] - n))  # [B, H, C] decay of token j's k·v at the end
    state = state * from_start[:, :, -1, None, None] + (k * to_end[..., None]).transpose(-1, -2) @ v
    return out, state


def state_after(k: Tensor, v: Tensor, slopes: Tensor, state: Tensor, consumed: Tensor) -> Tensor:
    """The state after each row's first `consumed` tokens, in closed form.

    k/v [N, H, L, D], state [N, H, D, D] (before the step), consumed [N] → [N, H, D, D]:
    S_c = e^{-s·c}·S_0 + Σ_{j<c} e^{-s·(c−1−j)}·k_jᵀ v_j.  A sequence's real tokens come
    first in the padded layout, so the first `consumed` positions are its first tokens.
    """
    s = slopes[None, :, None]  # [1, H, 1]
    positions = torch.arange(k.shape[2], device=k.device)  # [L]
    gap = (consumed[:, None] - 1 - positions)[:, None, :]  # [N, 1, L] tokens after j, up to c
    weight = torch.exp((-s * gap).masked_fill(gap < 0, float("-inf")))  # [N, H, L]
    decayed = state * torch.exp(-s * consumed[:, None, None])[..., None]  # [N, H, D, D]
    return decayed + (k * weight[..., None]).transpose(-1, -2) @ v

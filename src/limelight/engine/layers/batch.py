"""The description of one forward step that every layer reads: `ForwardBatch`.

A step runs B sequences, each contributing `query_len` new tokens (a prefill chunk or one
decode token).  Token-wise layers (linear, norms, MoE) see the new tokens flattened to
`[T, ...]`; attention-like layers need them per sequence, so the batch also carries the
index maps between the flat layout and a padded `[B, Lq]` layout, and where each
sequence's keys and values live in the paged KV cache.

This module owns the layout and its masks.  It does not own the cache tensors (the model
runner binds them to the attention modules) nor any scheduling decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

# Padding positions: a padded key must never be visible to a real query, and a padded
# query must see at least one key (an all-masked row makes softmax NaN).
_PAD_KEY_POSITION = 1 << 30
_PAD_QUERY_POSITION = (1 << 30) - 1


@dataclass(slots=True)
class SequenceSlice:
    """One sequence's part of a step, in the terms the batch builder needs."""

    start: int  # tokens of this sequence already in the KV cache
    num_new: int  # tokens computed in this step
    block_table: list[int]  # KV block ids covering at least start + num_new tokens
    state_slot: int = 0  # row of the linear-attention state pool (hybrid models)
    # (tokens consumed in this step, snapshot slot): linear-attention states to save
    snapshots: list[tuple[int, int]] = field(default_factory=list)
    restore_from: int | None = None  # snapshot slot to load the state from before the step


@dataclass(slots=True, eq=False)
class ForwardBatch:
    positions: Tensor  # [T] absolute position of each new token
    query_lens: Tensor  # [B]
    start_lens: Tensor  # [B] tokens already cached before this step
    padded_index: Tensor  # [B, Lq] flat token index, T for padding (a zero row)
    flat_index: Tensor  # [T] index of each flat token in the padded [B * Lq] layout
    slot_mapping: Tensor  # [T] KV slot of each new token
    key_slots: Tensor  # [B, Lk] KV slots of each sequence's context, 0 for padding
    key_positions: Tensor  # [B, Lk] absolute positions, huge for padding
    query_positions: Tensor  # [B, Lq] absolute positions, huge for padding
    state_slots: Tensor  # [B] linear-attention state row of each sequence
    state_restores: list[tuple[int, int]]  # (state slot, snapshot slot) to load first
    state_snapshots: list[tuple[int, int, int]]  # (batch row, tokens consumed, snapshot slot)
    _masks: dict[int | None, Tensor] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_seqs(self) -> int:
        return int(self.query_lens.shape[0])

    @staticmethod
    def build(
        seqs: list[SequenceSlice], block_size: int, device: torch.device | str = "cpu"
    ) -> ForwardBatch:
        """Lay out a step from per-sequence slices (host-side lists, one copy to device)."""
        assert seqs, "a step needs at least one sequence"
        max_q = max(s.num_new for s in seqs)
        max_k = max(s.start + s.num_new for s in seqs)
        positions: list[int] = []
        slot_mapping: list[int] = []
        flat_index: list[int] = []
        padded_index: list[list[int]] = []
        query_positions: list[list[int]] = []
        key_slots: list[list[int]] = []
        key_positions: list[list[int]] = []
        snapshots: list[tuple[int, int, int]] = []
        restores: list[tuple[int, int]] = []
        num_tokens = sum(s.num_new for s in seqs)
        for row, s in enumerate(seqs):
            end = s.start + s.num_new
            assert len(s.block_table) * block_size >= end, "block table too short"
            slots = [
                s.block_table[p // block_size] * block_size + p % block_size for p in range(end)
            ]
            first = len(positions)
            positions.extend(range(s.start, end))
            slot_mapping.extend(slots[s.start :])
            flat_index.extend(row * max_q + i for i in range(s.num_new))
            pad_q = max_q - s.num_new
            padded_index.append(list(range(first, first + s.num_new)) + [num_tokens] * pad_q)
            query_positions.append(list(range(s.start, end)) + [_PAD_QUERY_POSITION] * pad_q)
            key_slots.append(slots + [0] * (max_k - end))
            key_positions.append(list(range(end)) + [_PAD_KEY_POSITION] * (max_k - end))
            snapshots.extend((row, consumed, slot) for consumed, slot in s.snapshots)
            if s.restore_from is not None:
                restores.append((s.state_slot, s.restore_from))

        def t(x: list[int] | list[list[int]]) -> Tensor:
            return torch.tensor(x, dtype=torch.long, device=device)

        return ForwardBatch(
            positions=t(positions),
            query_lens=t([s.num_new for s in seqs]),
            start_lens=t([s.start for s in seqs]),
            padded_index=t(padded_index),
            flat_index=t(flat_index),
            slot_mapping=t(slot_mapping),
            key_slots=t(key_slots),
            key_positions=t(key_positions),
            query_positions=t(query_positions),
            state_slots=t([s.state_slot for s in seqs]),
            state_restores=restores,
            state_snapshots=snapshots,
        )

    def to_padded(self, x: Tensor) -> Tensor:
        """[T, ...] → [B, Lq, ...], padding rows are zeros."""
        zero = x.new_zeros((1, *x.shape[1:]))
        return torch.cat([x, zero])[self.padded_index]

    def to_flat(self, x: Tensor) -> Tensor:
        """[B, Lq, ...] → [T, ...]."""
        return x.flatten(0, 1)[self.flat_index]

    def query_valid(self) -> Tensor:
        """[B, Lq] True where the padded layout holds a real token."""
        return self.query_positions != _PAD_QUERY_POSITION

    def attention_mask(self, sliding_window: int | None = None) -> Tensor:
        """[B, 1, Lq, Lk] boolean mask: causal, padding, and an optional sliding window."""
        if sliding_window not in self._masks:
            q = self.query_positions[:, :, None]  # [B, Lq, 1]
            k = self.key_positions[:, None, :]  # [B, 1, Lk]
            mask = k <= q
            if sliding_window is not None:
                mask &= (q - k < sliding_window) | (q == _PAD_QUERY_POSITION)
            self._masks[sliding_window] = mask[:, None]
        return self._masks[sliding_window]

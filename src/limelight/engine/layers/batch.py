"""The description of one forward step that every layer reads: `ForwardBatch`.

A step runs B sequences, each contributing `query_len` new tokens (a prefill chunk or one
decode token).  Token-wise layers (linear, norms, MoE) see the new tokens flattened to
`[T, ...]`; attention-like layers need them per sequence, so the batch also carries the
index maps between the flat layout and a padded `[B, Lq]` layout, and where each
sequence's keys and values live in the paged KV cache.

A decode step also notes the context that several of its sequences share (`SharedPrefix`):
users of one character share its prompt's KV blocks through the prefix cache, and
attention can read those keys once for all of them instead of once per sequence.

This module owns the layout and its masks.  It does not own the cache tensors (the model
runner binds them to the attention modules) nor any scheduling decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

# Padding positions: a padded key must never be visible to a real query, and a padded
# query must see at least one key (an all-masked row makes softmax NaN).
_PAD_KEY_POSITION = 1 << 30
_PAD_QUERY_POSITION = (1 << 30) - 1
# Shorter shared contexts are read per sequence: the saving would not pay for the second
# attention call and the merge (4 sequences sharing 400 of 800 keys: only 10% faster).
MIN_SHARED_TOKENS = 256


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
    is_prompt: bool = False  # its new tokens are prompt tokens (attended as a `PromptChunk`)


@dataclass(slots=True, eq=False)
class SharedPrefix:
    """Keys at the start of several decoding sequences' contexts, in the same KV blocks."""

    rows: Tensor  # [G] the batch rows that share them
    slots: Tensor  # [Lp] their KV slots
    own_slots: Tensor  # [B, Lo] every row's other keys (all of them outside `rows`), 0 pad
    own_mask: Tensor  # [B, 1, 1, Lo] additive: 0 for a key, -inf for padding
    own_lens: Tensor  # [B] keys in each row of `own_slots`


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
    max_query_len: int  # 1: one new token per sequence (the padded layout is the flat one)
    prompt_rows: list[int]  # the sequences whose new tokens are prompt tokens
    shared: SharedPrefix | None = None  # decode steps only
    _masks: dict[int | None, Tensor] = field(default_factory=dict)
    _kernel_keys: dict[int | None, KernelKeys] = field(default_factory=dict)
    _split: ChunkSplit | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_seqs(self) -> int:
        return int(self.query_lens.shape[0])

    @property
    def is_decode(self) -> bool:
        """Every sequence decodes one token: no prompt tokens, no drafts."""
        return self.max_query_len == 1 and not self.prompt_rows

    @staticmethod
    def build(
        seqs: list[SequenceSlice], block_size: int, device: torch.device | str = "cpu"
    ) -> ForwardBatch:
        """Lay out a step from per-sequence slices: O(B) Python, the rest in tensors."""
        assert seqs, "a step needs at least one sequence"
        for s in seqs:
            assert len(s.block_table) * block_size >= s.start + s.num_new, "block table too short"
        starts = torch.tensor([s.start for s in seqs])  # [B]
        query_lens = torch.tensor([s.num_new for s in seqs])  # [B]
        ends = starts + query_lens
        max_q, max_k = int(query_lens.max()), int(ends.max())
        key_pos = torch.arange(max_k).expand(len(seqs), max_k)  # [B, Lk]
        key_valid = key_pos < ends[:, None]
        key_slots = _slots(seqs, key_pos, block_size).where(key_valid, 0)

        query_pos = starts[:, None] + torch.arange(max_q)  # [B, Lq]
        query_valid = torch.arange(max_q) < query_lens[:, None]
        flat_of_padded, padded_of_flat = _flat_and_padded(query_valid)
        positions = query_pos[query_valid]
        rows = torch.arange(len(seqs)).repeat_interleave(query_lens)

        def dev(x: Tensor) -> Tensor:
            return x.to(device=device, dtype=torch.long)

        return ForwardBatch(
            positions=dev(positions),
            query_lens=dev(query_lens),
            start_lens=dev(starts),
            padded_index=dev(flat_of_padded),
            flat_index=dev(padded_of_flat),
            slot_mapping=dev(key_slots[rows, positions]),
            key_slots=dev(key_slots),
            key_positions=dev(torch.where(key_valid, key_pos, _PAD_KEY_POSITION)),
            query_positions=dev(torch.where(query_valid, query_pos, _PAD_QUERY_POSITION)),
            state_slots=dev(torch.tensor([s.state_slot for s in seqs])),
            state_restores=[
                (s.state_slot, s.restore_from) for s in seqs if s.restore_from is not None
            ],
            state_snapshots=[
                (row, consumed, slot)
                for row, s in enumerate(seqs)
                for consumed, slot in s.snapshots
            ],
            max_query_len=max_q,
            prompt_rows=[row for row, s in enumerate(seqs) if s.is_prompt],
            shared=_shared_prefix(seqs, ends, block_size, device),
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

    def kernel_keys(self, sliding_window: int | None = None) -> KernelKeys:
        """A decode step's keys for the CPU attention kernel (`KernelKeys`), computed once
        a step per window.  A windowed layer reads each row's last `sliding_window` keys
        and no shared prefix (its keys may lie outside the window)."""
        if sliding_window not in self._kernel_keys:
            shared = self.shared
            if shared is not None and sliding_window is None:
                own = shared.own_slots, torch.zeros_like(shared.own_lens), shared.own_lens
                keys = KernelKeys(*own, shared.rows, shared.slots)
            else:
                keys = _own_keys(self.key_slots, self.start_lens + self.query_lens, sliding_window)
            self._kernel_keys[sliding_window] = keys
        return self._kernel_keys[sliding_window]

    def chunk_split(self) -> ChunkSplit | None:
        """A step with prompt tokens or drafts, in its parts (`ChunkSplit`); None for a
        decode step."""
        if self.is_decode:
            return None
        if self._split is None:
            first = torch.cumsum(self.query_lens, 0) - self.query_lens  # flat index of each row
            chunks: list[PromptChunk] = []
            rows: list[tuple[int, int, int]] = []  # (row, token, context length) of the rest
            prompts = set(self.prompt_rows)
            for row, (at, start, length) in enumerate(
                zip(first.tolist(), self.start_lens.tolist(), self.query_lens.tolist(), strict=True)
            ):
                if row in prompts:
                    slots = self.key_slots[row, : start + length]
                    chunks.append(PromptChunk(slice(at, at + length), start, slots))
                else:
                    rows.extend((row, at + i, start + i + 1) for i in range(length))
            device = self.positions.device
            row_of, tokens, ends = torch.tensor(rows, dtype=torch.long).view(-1, 3).T.to(device)
            self._split = ChunkSplit(
                chunks=chunks,
                decode_tokens=tokens.contiguous(),
                decode_slots=self.key_slots[row_of],
                decode_ends=ends.contiguous(),
            )
        return self._split


PROMPT_GROUP = 32  # positions of a prompt chunk attended as one batch item (`ChunkSplit`)
KEY_BLOCK = 512  # keys PyTorch's CPU flash attention takes a block at a time, from 0


@dataclass(slots=True, eq=False)
class PromptChunk:
    """One sequence's prompt tokens in a step."""

    tokens: slice  # in the flat layout
    start: int  # position of the first
    slots: Tensor  # [start + length] the sequence's keys, up to the last of them

    @property
    def first(self) -> int:
        """The position its groups start at: `start` down to a multiple of PROMPT_GROUP."""
        return self.start - self.start % PROMPT_GROUP

    @property
    def groups(self) -> int:
        return -(-(len(self.slots) - self.first) // PROMPT_GROUP)

    @property
    def width(self) -> int:
        """Its keys padded to whole KEY_BLOCKs."""
        end = len(self.slots)
        return end + (-end % KEY_BLOCK)


@dataclass(slots=True, eq=False)
class ChunkSplit:
    """A step with prompt tokens (new turns) or drafts, attended in two parts.

    - Each prompt chunk alone: in bfloat16 on a CPU with AMX through
      `kernels.tile_attention` (each query a tile row of its own), elsewhere through
      PyTorch's SDPA, its positions in groups of PROMPT_GROUP aligned to multiples of it,
      each group a batch item (zero queries where the chunk has none), against the keys up
      to the chunk's last, padded with zeros (masked) to whole KEY_BLOCKs.  Every block of
      keys and every group then has the same shape whatever the chunk, so a prompt token
      gets the same bits in any chunk: whole, or after a prefix from the cache.  In one
      call over the chunk, SDPA sums a token's keys in an order that depends on its row in
      the call and on the number of keys: ~20% of the rows differed in their last bits
      across cuts (measured), and a greedy reply followed.
    - Every other token (decoding rows, drafts: one query row each, its own keys up to its
      position) through the CPU kernel, which first stores every new key of the step."""

    chunks: list[PromptChunk]
    decode_tokens: Tensor  # [R] the other tokens, in the flat layout
    decode_slots: Tensor  # [R, Lk] their sequences' keys' slots
    decode_ends: Tensor  # [R] their context lengths, own key included
    _keys: dict[int | None, KernelKeys] = field(default_factory=dict)
    _masks: dict[tuple[int, int | None], Tensor] = field(default_factory=dict)
    _padded: dict[tuple[int, torch.dtype], tuple[Tensor, Tensor]] = field(default_factory=dict)
    _decode_chunks: list[PromptChunk] | None = None

    def kernel_keys(self, sliding_window: int | None = None) -> KernelKeys:
        """The other tokens' keys, as `ForwardBatch.kernel_keys` (no shared prefix)."""
        if sliding_window not in self._keys:
            keys = _own_keys(self.decode_slots, self.decode_ends, sliding_window)
            self._keys[sliding_window] = keys
        return self._keys[sliding_window]

    def decode_chunks(self) -> list[PromptChunk]:
        """The other tokens as chunks of one, where there is no kernel to take them."""
        if self._decode_chunks is None:
            tokens, ends = self.decode_tokens.tolist(), self.decode_ends.tolist()
            self._decode_chunks = [
                PromptChunk(slice(t, t + 1), end - 1, self.decode_slots[r, :end])
                for r, (t, end) in enumerate(zip(tokens, ends, strict=True))
            ]
        return self._decode_chunks

    def padded_keys(
        self, chunk: PromptChunk, k_cache: Tensor, v_cache: Tensor, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """`chunk`'s keys and values from the caches [slots, Hkv, D], then zeros up to its
        width: each [1, Hkv, width, D] in `dtype`.  One pair of buffers a chunk for every
        layer (new ones each layer cost more in page faults than the copies)."""
        key = (id(chunk), dtype)
        if key not in self._padded:
            shape = (chunk.width, *k_cache.shape[1:])
            zeros = (k_cache.new_zeros(shape, dtype=dtype) for _ in range(2))
            self._padded[key] = (next(zeros), next(zeros))
        padded = self._padded[key]
        for cache, buffer in zip((k_cache, v_cache), padded, strict=True):
            rows = buffer[: len(chunk.slots)]
            if dtype == cache.dtype:
                torch.index_select(cache, 0, chunk.slots, out=rows)
            else:
                rows.copy_(cache.index_select(0, chunk.slots))
        keys, values = (buffer.transpose(0, 1)[None] for buffer in padded)
        return keys, values

    def chunk_mask(self, chunk: PromptChunk, sliding_window: int | None = None) -> Tensor:
        """[groups, 1, PROMPT_GROUP, width] for `chunk`'s groups of positions (see above),
        additive (0 or -inf): causal, the padding keys hidden, an optional sliding window."""
        key = (id(chunk), sliding_window)
        if key not in self._masks:
            device, end = chunk.slots.device, len(chunk.slots)
            q = torch.arange(chunk.first, chunk.first + chunk.groups * PROMPT_GROUP, device=device)
            q = q.view(chunk.groups, 1, PROMPT_GROUP, 1)
            k = torch.arange(chunk.width, device=device)
            mask = (k <= q) & (k < end)
            if sliding_window is not None:
                mask &= q - k < sliding_window
            # additive: SDPA would convert a boolean mask in every layer
            self._masks[key] = torch.zeros(mask.shape, device=device).masked_fill_(~mask, -math.inf)
        return self._masks[key]


@dataclass(slots=True, eq=False)
class KernelKeys:
    """Where each decoding row's keys are, as the CPU attention kernel reads them
    (`kernels.paged_decode`): row b attends to `slots[b, begin[b]:end[b]]`, and the rows in
    `shared_rows` also to `shared_slots` (empty tensors when no keys are shared)."""

    slots: Tensor  # [B, L]
    begin: Tensor  # [B]
    end: Tensor  # [B]
    shared_rows: Tensor  # [R]
    shared_slots: Tensor  # [S]


def _own_keys(slots: Tensor, ends: Tensor, sliding_window: int | None) -> KernelKeys:
    """Rows attending to `slots[b, :ends[b]]`, or to the last `sliding_window` of them."""
    begin = torch.zeros_like(ends)
    if sliding_window is not None:
        begin = (ends - sliding_window).clamp_(min=0)
    none = torch.zeros(0, dtype=torch.long, device=ends.device)
    return KernelKeys(slots, begin, ends, none, none)


def _flat_and_padded(query_valid: Tensor) -> tuple[Tensor, Tensor]:
    """[B, Lq] real-token mask → (flat index of each padded place, T for padding;
    padded index of each flat token)."""
    num_tokens = int(query_valid.sum())
    flat_of_padded = torch.full(query_valid.shape, num_tokens)
    flat_of_padded[query_valid] = torch.arange(num_tokens)
    padded_of_flat = torch.arange(query_valid.numel()).view(query_valid.shape)[query_valid]
    return flat_of_padded, padded_of_flat


def _slots(seqs: list[SequenceSlice], positions: Tensor, block_size: int) -> Tensor:
    """[B, L] token positions → their KV slots through each sequence's block table."""
    width = max(len(s.block_table) for s in seqs)
    tables = torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in seqs])
    blocks = tables.gather(1, (positions // block_size).clamp(max=width - 1))
    return blocks * block_size + positions % block_size


def _shared_prefix(
    seqs: list[SequenceSlice], ends: Tensor, block_size: int, device: torch.device | str
) -> SharedPrefix | None:
    """The largest group of sequences whose block tables start alike, and the blocks they
    have in common (whole blocks before every member's new token), if enough of them.
    Decode steps on the CPU only: attention merges the two parts by the log-sum-exp that
    PyTorch's CPU flash kernel returns, so other devices would build it for nothing."""
    if torch.device(device).type != "cpu" or any(s.num_new != 1 or s.is_prompt for s in seqs):
        return None
    groups: dict[int, list[int]] = {}
    for row, s in enumerate(seqs):
        groups.setdefault(s.block_table[0], []).append(row)
    rows = max(groups.values(), key=len)
    if len(rows) < 2:
        return None
    tables = [seqs[row].block_table for row in rows]
    limit = min(seqs[row].start for row in rows) // block_size
    common = 0
    while common < limit and all(table[common] == tables[0][common] for table in tables):
        common += 1
    if common * block_size < MIN_SHARED_TOKENS:
        return None
    own_start = torch.zeros(len(seqs), dtype=torch.long)
    own_start[rows] = common * block_size
    own_lens = ends - own_start
    own_pos = own_start[:, None] + torch.arange(int(own_lens.max()))  # [B, Lo]
    own_valid = own_pos < ends[:, None]
    prefix = torch.tensor(tables[0][:common])[:, None] * block_size + torch.arange(block_size)
    mask = torch.zeros(own_valid.shape).masked_fill_(~own_valid, float("-inf"))
    return SharedPrefix(
        rows=torch.tensor(rows, device=device),
        slots=prefix.flatten().to(device),
        own_slots=_slots(seqs, own_pos, block_size).where(own_valid, 0).to(device),
        own_mask=mask[:, None, None, :].to(device),
        own_lens=own_lens.to(device),
    )

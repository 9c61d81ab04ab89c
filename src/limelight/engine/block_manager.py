"""Paged KV blocks, and the prefix cache that shares them across requests.

The cache is `num_blocks` blocks of `block_size` token slots.  A block that is full of
computed tokens gets a hash chained from its predecessor's, `hash((prev_hash, tokens))`,
so equal hashes mean equal whole prefixes; a new request walks its prompt block by block
and takes every block already in the cache instead of computing it again.  Blocks are
reference counted; an unreferenced block stays matchable in an LRU list until it is needed
for new tokens.

Hybrid models (linear attention) cannot restart from KV alone: their recurrent state at a
block boundary is saved in a bounded pool of snapshot slots, and a prefix match may only
end at a block whose snapshot is still held.  Slot 0 of that pool is the zero state of a
fresh sequence and is never written.

Hand-written because it is the engine's own value (the design follows vLLM/nano-vllm's
hash-chained blocks).  It decides which blocks and snapshots hold what; it never touches
a tensor.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from limelight.engine.sequence import Sequence

ZERO_STATE_SLOT = 0


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set once the block is full of computed tokens
    token_ids: tuple[int, ...] = ()


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, prefix_caching: bool = True, num_snapshots: int = 0
    ) -> None:
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # LRU first
        self.cached: dict[int, int] = {}  # block hash → block id
        self.is_hybrid = num_snapshots > 0
        self.free_snapshots = list(range(num_snapshots - 1, ZERO_STATE_SLOT, -1))
        self.snapshot_of: OrderedDict[int, int] = OrderedDict()  # block id → slot, LRU first
        self.num_lookup_tokens = 0  # tokens of allocated sequences (prefix-cache statistics)
        self.num_hit_tokens = 0  # of those, found in the cache

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        return self.blocks_needed(len(seq)) <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks."""
        assert not seq.block_table
        hits = self._match_prefix(seq.token_ids)
        for block_id in hits:
            if block_id in self.free:
                del self.free[block_id]
            self.blocks[block_id].ref_count += 1
        seq.block_table = hits + [
            self._take_free() for _ in range(self.blocks_needed(len(seq)) - len(hits))
        ]
        seq.num_computed = len(hits) * self.block_size
        seq.num_cached_prompt_tokens = min(seq.num_computed, seq.num_prompt_tokens)
        self.num_lookup_tokens += len(seq)
        self.num_hit_tokens += seq.num_computed
        if self.is_hybrid:
            seq.restore_from = self.snapshot_of[hits[-1]] if hits else ZERO_STATE_SLOT
            if hits:
                self.snapshot_of.move_to_end(hits[-1])

    def append_slot(self, seq: Sequence) -> bool:
        """Make room for a sequence's newest token; False when no block is free."""
        if len(seq.block_table) >= self.blocks_needed(len(seq)):
            return True
        if not self.free:
            return False
        seq.block_table.append(self._take_free())
        return True

    def reserve_slots(self, seq: Sequence, num_tokens: int) -> int:
        """Blocks for up to `num_tokens` past the sequence's end, as far as free blocks go;
        returns how many of those tokens fit (speculative decoding's draft slots)."""
        while len(seq.block_table) < self.blocks_needed(len(seq) + num_tokens) and self.free:
            seq.block_table.append(self._take_free())
        return min(num_tokens, len(seq.block_table) * self.block_size - len(seq))

    def release(self, seq: Sequence) -> None:
        """Drop a sequence's references; its hashed blocks stay matchable until reused."""
        for block_id in reversed(seq.block_table):  # the tail is evicted first
            block = self.blocks[block_id]
            assert block.ref_count > 0
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
        seq.block_table = []
        seq.num_computed = 0

    def commit(self, seq: Sequence) -> None:
        """Register the sequence's newly full, computed blocks in the prefix cache."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        for i in range(seq.num_computed // bs):
            block = self.blocks[seq.block_table[i]]
            if block.hash is not None:
                continue
            prev = self.blocks[seq.block_table[i - 1]].hash if i else None
            block.token_ids = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            block.hash = hash((prev, block.token_ids))
            self.cached[block.hash] = block.block_id

    def plan_snapshots(self, seq: Sequence, num_new: int) -> list[tuple[int, int]]:
        """Hybrid models: (tokens consumed, slot) for each block the step will complete."""
        if not (self.is_hybrid and self.prefix_caching):
            return []
        plan = []
        bs, start = self.block_size, seq.num_computed
        for boundary in range(start - start % bs + bs, start + num_new + 1, bs):
            block_id = seq.block_table[boundary // bs - 1]
            plan.append((boundary - start, self._snapshot_slot(block_id)))
        return plan

    def _match_prefix(self, token_ids: list[int]) -> list[int]:
        if not self.prefix_caching:
            return []
        bs, hits, prev = self.block_size, [], None
        usable = 0  # hybrid: a match must end where a state snapshot exists
        for i in range((len(token_ids) - 1) // bs):  # keep at least one token to compute
            tokens = tuple(token_ids[i * bs : (i + 1) * bs])
            prev = hash((prev, tokens))
            block_id = self.cached.get(prev)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
            if not self.is_hybrid or block_id in self.snapshot_of:
                usable = len(hits)
        return hits[:usable]

    def _take_free(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        assert block.ref_count == 0
        if block.hash is not None and self.cached.get(block.hash) == block_id:
            del self.cached[block.hash]
        block.hash, block.token_ids, block.ref_count = None, (), 1
        if block_id in self.snapshot_of:
            self.free_snapshots.append(self.snapshot_of.pop(block_id))
        return block_id

    def _snapshot_slot(self, block_id: int) -> int:
        if block_id in self.snapshot_of:
            self.snapshot_of.move_to_end(block_id)
            return self.snapshot_of[block_id]
        if self.free_snapshots:
            slot = self.free_snapshots.pop()
        else:
            _, slot = self.snapshot_of.popitem(last=False)
        self.snapshot_of[block_id] = slot
        return slot

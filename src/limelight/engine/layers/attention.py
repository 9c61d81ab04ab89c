"""Softmax attention over the paged KV cache.

`PagedAttention` owns one layer's view of the cache: it writes the step's new keys and
values into their slots, gathers each sequence's whole context through its slot list, and
runs one batched scaled-dot-product attention over the padded batch (no per-sequence
Python loop).  Projections, rotary embeddings and norms belong to the model; the cache
tensors are allocated and bound by the model runner.

A decode step whose sequences share the start of their context (`SharedPrefix`: one
character's users) reads those keys once: all the group's queries attend to the shared
keys in one call, every sequence to its own keys in another, and the two are merged by
their log-sum-exps.  On the CPU, decode attention is bound by reading the gathered keys
and values (4 sequences at 1,600 tokens: ~60% of a step).  Measured on SmolLM2 int4 with
a 1,190-token shared context: a decode step of 8 sequences took 59-61 instead of 111 ms,
one of 4 sequences 44-47 instead of 47-50 ms (attention alone, 30 layers, random data: 4
users sharing 1,136 of 1,600 tokens 21-25 instead of 48 ms).  In bfloat16 the two paths
sum in a different order, so a greedy text may part at a near-tie; in float32 they agree.

On the CPU a step of one new token per sequence (decode) goes to the kernel in
`engine/kernels` instead, where it is built: it reads each key and value once from its
slot for all the query heads that use it, and shared keys once for all the rows that share
them, with no gathered copy (SmolLM2 int4, a whole decode step, kernel against the path
below, alternating in one process: 1 x 66 of context 15.9 / 23.6 ms, 1 x 1,431 22.2 /
52.1, 4 x 1,431 sharing it 33.8 / 46.8, 16 x 66 65.3 / 88.4).

On the CPU a step with prompt tokens (a new turn, perhaps while other users' replies go
on) or drafts is split in two (`ChunkSplit`): every token that is not a prompt token
through the kernel, one query row each; each prompt chunk alone, so that a prompt token
gets the same bits however the scheduler and the prefix cache cut its prompt.  That is
what makes an identical greedy request, or a regenerated reply, the same text (one SDPA
call a chunk, or the decode kernel, sums a token's keys in an order that depends on the
cut).  In bfloat16 on a CPU with AMX a chunk goes to `kernels.tile_attention`: each query
a tile row of its own, its keys 32 at a time from key 0.  Elsewhere (float32, no AMX,
heads of other sizes) it goes through SDPA in groups of 32 positions against whole blocks
of 512 keys, in the model's dtype.  SmolLM2's heads, µs a layer, tiles / groups / one
float32 SDPA call a chunk (the path before either; `tile_attention.cpp` has how):
30 new tokens after 992 cached 317 / 859 / 1,591, 110 after 1,568 956 / 3,089, 256 after
744 1,298 / 4,151 / 5,492, 512 after 1,000 2,886 / 8,253 / 13,633, a fresh 256 421 / 1,638 /
1,438 and 1 after 1,008 200 / 740 / 556.  A step that is one prompt chunk and nothing else
hands the kernel its new keys to store too.  The padded code below serves decode steps
without the kernel, and other devices.

In a compiled decode step (`engine/compiled.py`) attention is one opaque operator,
`limelight::paged_attention`, that runs the code below unchanged: its cache writes, its
gathers over a context that grows every step and the cascade stay out of the traced graph,
which then only depends on the number of new tokens.  The operator names its layer by its
place in the model (`op_index`), and reads the layers and the step's batch from
`compiled_step`, which the compiled step sets around its call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from limelight.engine import kernels
from limelight.engine.layers.batch import (
    PROMPT_GROUP,
    ChunkSplit,
    ForwardBatch,
    KernelKeys,
    PromptChunk,
    SharedPrefix,
)


class PagedAttention(nn.Module):
    k_cache: Tensor  # [num_slots, Hkv, D], bound by the model runner
    v_cache: Tensor

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float,
        sliding_window: int | None = None,
        logit_softcap: float | None = None,
    ) -> None:
        super().__init__()
        assert num_heads % num_kv_heads == 0
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.sliding_window = sliding_window
        self.logit_softcap = logit_softcap
        self.k_cache = self.v_cache = torch.empty(0)
        self.op_index = -1  # this layer's place in its model, set when the model is compiled

    def bind_cache(self, k_cache: Tensor, v_cache: Tensor) -> None:
        assert k_cache.shape[1:] == (self.num_kv_heads, self.head_dim)
        self.k_cache, self.v_cache = k_cache, v_cache

    def forward(self, q: Tensor, k: Tensor, v: Tensor, batch: ForwardBatch) -> Tensor:
        """q [T, H, D], k/v [T, Hkv, D] → [T, H * D]."""
        if torch.compiler.is_compiling():  # traced: one opaque call (see the module docstring)
            return torch.ops.limelight.paged_attention(q, k, v, self.op_index)
        return self.attend(q, k, v, batch)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, batch: ForwardBatch) -> Tensor:
        kernel = self._kernel(q)
        if kernel is not None and batch.is_decode:
            rows = batch.kernel_keys(self.sliding_window)
            return self._kernel_attend(kernel, q, k, v, rows, batch.slot_mapping)
        if q.device.type == "cpu" and (split := batch.chunk_split()) is not None:
            return self._split_attend(kernel, q, k, v, batch, split)
        self._store(k, v, batch.slot_mapping)
        dtype = _compute_dtype(q)
        if batch.shared is not None and self.logit_softcap is None and not self.sliding_window:
            return self._cascade(q, batch.shared, dtype).to(q.dtype)
        keys = self._gather(self.k_cache, batch.key_slots, dtype)  # [B, Hkv, Lk, D]
        values = self._gather(self.v_cache, batch.key_slots, dtype)
        one_each = batch.max_query_len == 1  # T == B: the flat layout is the padded one
        if one_each:
            queries = q.to(dtype).unsqueeze(2)  # [B, H, 1, D]
        else:
            queries = batch.to_padded(q).to(dtype).transpose(1, 2)  # [B, H, Lq, D]
        mask = self._mask(batch, one_each, keys.shape[2])  # [B, 1, Lq, Lk] or None
        out = self._sdpa(queries, keys, values, mask)
        if one_each:
            return out.to(q.dtype).flatten(1)  # [B, H * D]
        out = out.to(q.dtype).transpose(1, 2)  # [B, Lq, H, D]
        return batch.to_flat(out).flatten(1)  # [T, H * D]

    def _store(self, k: Tensor, v: Tensor, slots: Tensor) -> None:
        """The step's new keys and values k/v [T, Hkv, D] into their cache slots [T]."""
        self.k_cache.index_copy_(0, slots, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(0, slots, v.to(self.v_cache.dtype))

    def _kernel(self, q: Tensor) -> Callable[..., Tensor] | None:
        """The CPU attention kernel, where it is built and takes these tensors' dtypes."""
        if q.device.type != "cpu" or not {q.dtype, self.k_cache.dtype} <= kernels.DTYPES:
            return None
        return kernels.paged_decode()

    def _kernel_attend(
        self,
        kernel: Callable[..., Tensor],
        q: Tensor,
        k: Tensor,
        v: Tensor,
        keys: KernelKeys,
        new_slots: Tensor,
    ) -> Tensor:
        """Decoding rows through the kernel, which first writes the step's new keys and
        values (k/v [T, Hkv, D]) to their slots: q [B, H, D] → [B, H * D]."""
        b, h, d = q.shape
        dtype = self.k_cache.dtype
        queries = q.contiguous().view(b, self.num_kv_heads, h // self.num_kv_heads, d)
        out = kernel(
            queries,
            self.k_cache,
            self.v_cache,
            keys.slots,
            keys.begin,
            keys.end,
            keys.shared_rows,
            keys.shared_slots,
            self.scale,
            self.logit_softcap or 0.0,
            k.to(dtype).contiguous(),
            v.to(dtype).contiguous(),
            new_slots,
        )
        return out.view(b, h * d)

    def _split_attend(
        self,
        kernel: Callable[..., Tensor] | None,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        batch: ForwardBatch,
        split: ChunkSplit,
    ) -> Tensor:
        """A step with prompt chunks or drafts (`ChunkSplit`): the tokens that are not
        prompt tokens through the kernel, which stores every new key and value first, then
        each prompt chunk alone; without the kernel every token as a chunk."""
        t, h, d = q.shape
        rows, chunks = split.decode_tokens, split.chunks
        tiles = self._tiles(q)
        if tiles is not None and not len(rows) and len(chunks) == 1:  # one prompt, alone
            return self._tile_attend(tiles, q, chunks[0], (k, v, batch.slot_mapping))
        out = q.new_empty(t, h * d)
        if kernel is not None and len(rows):
            keys = split.kernel_keys(self.sliding_window)
            out[rows] = self._kernel_attend(kernel, q[rows], k, v, keys, batch.slot_mapping)
        else:
            self._store(k, v, batch.slot_mapping)
            if kernel is None:
                chunks = chunks + split.decode_chunks()
        for chunk in chunks:
            tokens = q[chunk.tokens]
            if tiles is not None:
                out[chunk.tokens] = self._tile_attend(tiles, tokens, chunk)
            else:
                out[chunk.tokens] = self._attend_chunk(tokens, chunk, split)
        return out

    def _tiles(self, q: Tensor) -> Callable[..., Tensor] | None:
        """The AMX prompt kernel, where it is offered and takes these heads and dtypes."""
        if q.dtype != torch.bfloat16 or self.k_cache.dtype != torch.bfloat16:
            return None
        return kernels.tile_attention() if kernels.tile_attention_fits(self.head_dim) else None

    def _tile_attend(
        self,
        tiles: Callable[..., Tensor],
        q: Tensor,
        chunk: PromptChunk,
        new: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        """One sequence's prompt tokens q [L, H, D] → [L, H * D] through
        `kernels.tile_attention`, each query a tile row of its own; `new` (k, v, slots):
        the step's new keys and values, which it stores first."""
        softcap, window = self.logit_softcap or 0.0, self.sliding_window or 0
        stored: tuple[Tensor | None, ...] = (None, None, None)
        if new is not None:
            k, v, slots = new
            stored = (
                k.to(self.k_cache.dtype).contiguous(),
                v.to(self.v_cache.dtype).contiguous(),
                slots,
            )
        return tiles(
            q.contiguous(), self.k_cache, self.v_cache, chunk.slots, chunk.start,
            self.scale, softcap, window, *stored,
        )  # fmt: skip

    def _attend_chunk(self, q: Tensor, chunk: PromptChunk, split: ChunkSplit) -> Tensor:
        """One sequence's prompt tokens q [L, H, D] → [L, H * D]: its groups of positions
        as batch items against whole blocks of keys (`ChunkSplit` says why), in q's dtype:
        the grouping, not float32, is what keeps a token's bits."""
        length, h, d = q.shape
        at = chunk.start - chunk.first  # the chunk's first row among its groups' rows
        mask = split.chunk_mask(chunk, self.sliding_window)  # [groups, 1, G, width]
        keys, values = split.padded_keys(chunk, self.k_cache, self.v_cache, q.dtype)
        queries = q.new_zeros(chunk.groups * PROMPT_GROUP, h, d)
        queries[at : at + length] = q
        queries = queries.view(chunk.groups, PROMPT_GROUP, h, d).transpose(
            1, 2
        )  # [groups, H, G, D]
        keys, values = (x.expand(chunk.groups, -1, -1, -1) for x in (keys, values))
        out = self._sdpa(queries, keys, values, mask).transpose(1, 2)  # [groups, G, H, D]
        return out.reshape(-1, h * d)[at : at + length]

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """SDPA over gathered keys ([B, H, Lq, D] against [B, Hkv, Lk, D]), or its
        tanh-capped form where the model caps its logits."""
        if self.logit_softcap is None:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=True
            )
        return _softcapped_attention(q, k, v, mask, self.scale, self.logit_softcap)

    def _mask(self, batch: ForwardBatch, one_each: bool, num_keys: int) -> Tensor | None:
        """None when every key is visible: one sequence's one new token, inside its window."""
        window = self.sliding_window
        if one_each and batch.num_seqs == 1 and (window is None or num_keys <= window):
            return None
        return batch.attention_mask(window)

    def _cascade(self, q: Tensor, shared: SharedPrefix, dtype: torch.dtype) -> Tensor:
        """Decode attention with the shared keys read once (plain softmax over every key,
        on the CPU: batch.py builds `SharedPrefix` there only): q [B, H, D] → [B, H * D].
        The query heads of a KV head stand in the query-length place ([B, Hkv, G, D]):
        one decoding token has no causal mask, so they are as good as positions."""
        b, h, d = q.shape
        kv, groups = self.num_kv_heads, h // self.num_kv_heads
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        queries = q.to(dtype).view(b, kv, groups, d)
        own_keys = self._gather(self.k_cache, shared.own_slots, dtype)  # [B, Hkv, Lo, D]
        own_values = self._gather(self.v_cache, shared.own_slots, dtype)
        out, lse = flash(
            queries, own_keys, own_values, attn_mask=shared.own_mask, scale=self.scale
        )  # [B, Hkv, G, D], [B, Hkv, G]
        slots = shared.slots[None]  # [1, Lp]
        keys = self._gather(self.k_cache, slots, dtype)  # [1, Hkv, Lp, D]
        values = self._gather(self.v_cache, slots, dtype)
        n = len(shared.rows)
        group = queries[shared.rows].transpose(0, 1).reshape(1, kv, n * groups, d)
        out_shared, lse_shared = flash(group, keys, values, scale=self.scale)
        out_shared = out_shared.reshape(kv, n, groups, d).transpose(0, 1)  # [n, Hkv, G, D]
        lse_shared = lse_shared.reshape(kv, n, groups).transpose(0, 1)
        out_own, lse_own = out[shared.rows], lse[shared.rows]
        top = torch.maximum(lse_own, lse_shared)
        w_own = (lse_own - top).exp_().unsqueeze(-1)
        w_shared = (lse_shared - top).exp_().unsqueeze(-1)
        merged = (out_own * w_own + out_shared * w_shared) / (w_own + w_shared)
        return out.index_copy(0, shared.rows, merged).reshape(b, h * d)

    @staticmethod
    def _gather(cache: Tensor, key_slots: Tensor, dtype: torch.dtype) -> Tensor:
        """[B, Lk] slots → [B, Hkv, Lk, D].  `index_select` copies rows ~6x faster than
        advanced indexing with a 2-d index on the CPU (19 vs 119 us for 1,600 slots)."""
        rows = cache.index_select(0, key_slots.flatten())  # [B * Lk, Hkv, D]
        return rows.view(*key_slots.shape, *cache.shape[1:]).to(dtype).transpose(1, 2)


class _OpaqueAttention:
    """What `limelight::paged_attention` needs besides q, k and v: the layers of the model
    whose compiled step runs now, and the step's batch."""

    def __init__(self) -> None:
        self.layers: list[PagedAttention] = []
        self.batch: ForwardBatch | None = None

    def attend(self, q: Tensor, k: Tensor, v: Tensor, layer_index: int) -> Tensor:
        assert self.batch is not None, "paged_attention outside a compiled step"
        return self.layers[layer_index].attend(q, k, v, self.batch)


_OPAQUE = _OpaqueAttention()

# Declared without side effects though it writes the layer's cache: the traced graph never
# sees the cache, and each call's output feeds the next layer, which keeps the calls in order.
_LIBRARY = torch.library.Library("limelight", "DEF")
_LIBRARY.define("paged_attention(Tensor q, Tensor k, Tensor v, int layer) -> Tensor")
_LIBRARY.impl("paged_attention", _OPAQUE.attend, "CompositeExplicitAutograd")


@torch.library.register_fake("limelight::paged_attention")
def _paged_attention_shape(q: Tensor, k: Tensor, v: Tensor, layer: int) -> Tensor:
    return q.new_empty(q.shape[0], q.shape[1] * q.shape[2])


def number_layers(model: nn.Module) -> list[PagedAttention]:
    """The model's attention layers in order, each told its place (`op_index`): the numbers
    are the same for every instance of a model, so a compiled graph is too (and Inductor's
    on-disk cache finds it again)."""
    layers = [m for m in model.modules() if isinstance(m, PagedAttention)]
    for index, layer in enumerate(layers):
        layer.op_index = index
    return layers


@contextmanager
def compiled_step(layers: list[PagedAttention], batch: ForwardBatch) -> Iterator[None]:
    """What the attention operators of a compiled forward read: its layers and batch."""
    _OPAQUE.layers, _OPAQUE.batch = layers, batch
    try:
        yield
    finally:
        _OPAQUE.layers, _OPAQUE.batch = [], None


def _compute_dtype(q: Tensor) -> torch.dtype:
    """The padded path runs in float32 on the CPU (decode steps where the kernel is not
    built), for precision.  Prompt chunks run in the model's dtype instead
    (`_attend_chunk`): bfloat16 SDPA takes AMX's products on an Intel Xeon, and grouped it
    gives a token the same bits however its prompt is cut (in one call a chunk, bfloat16
    had parted a regenerated greedy reply from the first, tests/server/test_sessions_api)."""
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return q.dtype


def _softcapped_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, cap: float
) -> Tensor:
    """Attention with tanh-capped logits (Gemma 2 style), which SDPA cannot express; the
    mask boolean (True: visible) or additive, as SDPA takes it."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, Lq, Lk]
    scores = torch.tanh(scores / cap) * cap
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.to(scores.dtype)
    return torch.softmax(scores, dim=-1) @ v

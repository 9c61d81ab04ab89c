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

In a compiled decode step (`engine/compiled.py`) attention is written out for Inductor
instead (`decode_traced`, the cascade included): the cache writes, then the dot products
and the weighted sums over each sequence's slots as plain reductions, which Inductor fuses
with the gather and the masking into a few C++ loops that read each key and value once,
straight from its slot.  Measured on SmolLM2's heads (30 layers, one step, block-shaped
random slots, the two paths in one process): 40 instead of 191 us a layer for 1 sequence
at 112 keys, 327 instead of 1,209 at 1,504, and 228 instead of 366 for 16 at 112; the
cascade, 4 sequences sharing 1,136 keys with 300 of their own: 499 instead of 582 us.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from limelight.engine.layers.batch import ForwardBatch, SharedPrefix


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

    def bind_cache(self, k_cache: Tensor, v_cache: Tensor) -> None:
        assert k_cache.shape[1:] == (self.num_kv_heads, self.head_dim)
        self.k_cache, self.v_cache = k_cache, v_cache

    def forward(self, q: Tensor, k: Tensor, v: Tensor, batch: ForwardBatch) -> Tensor:
        """q [T, H, D], k/v [T, Hkv, D] → [T, H * D]."""
        if torch.compiler.is_compiling():  # a compiled decode step (see the module docstring)
            return self.decode_traced(q, k, v, batch)
        return self.attend(q, k, v, batch)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, batch: ForwardBatch) -> Tensor:
        self.k_cache.index_copy_(0, batch.slot_mapping, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(0, batch.slot_mapping, v.to(self.v_cache.dtype))
        dtype = _compute_dtype(q)
        if batch.shared is not None and self.logit_softcap is None and not self.sliding_window:
            return self._cascade(q, batch.shared, dtype).to(q.dtype)
        keys = self._gather(self.k_cache, batch.key_slots, dtype)  # [B, Hkv, Lk, D]
        values = self._gather(self.v_cache, batch.key_slots, dtype)
        is_decode = batch.max_query_len == 1  # T == B: the flat layout is the padded one
        if is_decode:
            queries = q.to(dtype).unsqueeze(2)  # [B, H, 1, D]
        else:
            queries = batch.to_padded(q).to(dtype).transpose(1, 2)  # [B, H, Lq, D]
        mask = self._mask(batch, is_decode, keys.shape[2])  # [B, 1, Lq, Lk] or None
        if self.logit_softcap is None:
            out = F.scaled_dot_product_attention(
                queries, keys, values, attn_mask=mask, scale=self.scale, enable_gqa=True
            )
        else:
            out = _softcapped_attention(queries, keys, values, mask, self.scale, self.logit_softcap)
        if is_decode:
            return out.to(q.dtype).flatten(1)  # [B, H * D]
        out = out.to(q.dtype).transpose(1, 2)  # [B, Lq, H, D]
        return batch.to_flat(out).flatten(1)  # [T, H * D]

    def decode_traced(self, q: Tensor, k: Tensor, v: Tensor, batch: ForwardBatch) -> Tensor:
        """Decode attention as Inductor compiles it best, one new token a sequence:
        q [B, H, D], k/v [B, Hkv, D] → [B, H * D]; with the shared keys read once for all
        the sequences that share them, as in `_cascade`."""
        self.k_cache.index_copy_(0, batch.slot_mapping, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(0, batch.slot_mapping, v.to(self.v_cache.dtype))
        b, h, d = q.shape
        kv, groups = self.num_kv_heads, h // self.num_kv_heads
        queries = q.to(_compute_dtype(q)).view(b, kv, groups, d)
        shared = batch.shared if self.logit_softcap is None and not self.sliding_window else None
        if shared is None:
            query_positions = batch.positions[:, None]  # [B, 1]
            visible = batch.key_positions <= query_positions  # [B, Lk]: padding lies beyond
            if self.sliding_window is not None:
                visible &= query_positions - batch.key_positions < self.sliding_window
            bias = torch.zeros_like(visible, dtype=queries.dtype).masked_fill(~visible, -torch.inf)
            _, total, out = self._part(queries, batch.key_slots, bias)
            return (out / total[..., None]).to(q.dtype).reshape(b, h * d)
        _, total, out = own = self._part(queries, shared.own_slots, shared.own_mask[:, 0, 0])
        n = shared.rows.shape[0]  # the group's queries as the query heads of one row
        group = queries[shared.rows].transpose(0, 1).reshape(1, kv, n * groups, d)
        no_bias = group.new_zeros(1, shared.slots.shape[0])
        top_common, total_common, out_common = (
            x.reshape(kv, n, groups, *x.shape[3:]).transpose(0, 1)  # [n, Hkv, G, ...]
            for x in self._part(group, shared.slots[None], no_bias)
        )
        top_own, total_own, out_own = (x[shared.rows] for x in own)
        top = torch.maximum(top_own, top_common)
        w_own, w_common = (top_own - top).exp(), (top_common - top).exp()
        merged_total = total_own * w_own + total_common * w_common
        merged = out_own * w_own[..., None] + out_common * w_common[..., None]
        out = out.index_copy(0, shared.rows, merged)
        total = total.index_copy(0, shared.rows, merged_total)
        return (out / total[..., None]).to(q.dtype).reshape(b, h * d)

    def _part(self, queries: Tensor, slots: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Softmax attention of each row's queries over its keys, unnormalised: queries
        [B, Hkv, G, D], slots and bias [B, L] (bias 0 or -inf) → the top score and the sum
        of exponentials [B, Hkv, G], and the exponential-weighted values [B, Hkv, G, D].
        Written as plain reductions: Inductor fuses the gather through `slots` into them and
        reads each key and value once for all the query heads of its KV head."""
        keys = self.k_cache[slots].to(queries.dtype)[:, :, :, None, :]  # [B, L, Hkv, 1, D]
        scores = (queries[:, None] * keys).sum(-1) * self.scale  # [B, L, Hkv, G]
        if self.logit_softcap is not None:
            scores = torch.tanh(scores / self.logit_softcap) * self.logit_softcap
        scores = scores + bias[:, :, None, None]
        top = scores.amax(1)
        weights = (scores - top[:, None]).exp()[..., None]  # [B, L, Hkv, G, 1]
        values = self.v_cache[slots].to(queries.dtype)[:, :, :, None, :]
        return top, weights.sum((1, 4)), (weights * values).sum(1)

    def _mask(self, batch: ForwardBatch, is_decode: bool, num_keys: int) -> Tensor | None:
        """None when every key is visible: one sequence decoding, inside its window."""
        window = self.sliding_window
        if is_decode and batch.num_seqs == 1 and (window is None or num_keys <= window):
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


def _compute_dtype(q: Tensor) -> torch.dtype:
    """Attention runs in float32 on the CPU: PyTorch's CPU attention in bfloat16 is several
    times slower than in float32 (one decode query over 1,600 keys: 2.5 vs 1.0 ms with the
    casts, SmolLM2's heads), and the cast of the gathered keys costs less than that."""
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return q.dtype


def _softcapped_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, cap: float
) -> Tensor:
    """Attention with tanh-capped logits (Gemma 2 style), which SDPA cannot express."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, Lq, Lk]
    scores = torch.tanh(scores / cap) * cap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v

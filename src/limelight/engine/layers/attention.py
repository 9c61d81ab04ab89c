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
52.1, 4 x 1,431 sharing it 33.8 / 46.8, 16 x 66 65.3 / 88.4).  A step of one prompt chunk
beside decoding rows (a new turn while other users' replies go on) is split in two: the
decoding rows through the kernel, the chunk alone through SDPA, which would otherwise pad
every decoding row to the chunk's length (`ChunkSplit`).  Prompt tokens never go through
the kernel, however few a step computes: a prompt whose prefix came from the cache
computes its last token alone, and that token must get the bits it got in the chunk that
computed the whole prompt, which the kernel's order of sums does not give (an identical
greedy request answered differently).  The code below serves the other prompt steps, other
devices, float16, and machines where the kernel could not be built.

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
from limelight.engine.layers.batch import ChunkSplit, ForwardBatch, KernelKeys, SharedPrefix


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
        if (kernel := self._kernel(q)) is not None:
            if batch.is_decode:
                rows = batch.kernel_keys(self.sliding_window)
                return self._kernel_attend(kernel, q, k, v, rows, batch.slot_mapping)
            if (split := batch.chunk_split()) is not None:
                return self._split_attend(kernel, q, k, v, batch, split)
        self.k_cache.index_copy_(0, batch.slot_mapping, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(0, batch.slot_mapping, v.to(self.v_cache.dtype))
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
        kernel: Callable[..., Tensor],
        q: Tensor,
        k: Tensor,
        v: Tensor,
        batch: ForwardBatch,
        split: ChunkSplit,
    ) -> Tensor:
        """A prompt chunk beside decoding rows (`ChunkSplit`): the rows through the kernel,
        which stores every new key and value first, then the chunk alone through SDPA."""
        t, h, d = q.shape
        out = q.new_empty(t, h * d)
        rows, window = split.decode_tokens, self.sliding_window
        decoding = split.kernel_keys(window)
        out[rows] = self._kernel_attend(kernel, q[rows], k, v, decoding, batch.slot_mapping)
        dtype = _compute_dtype(q)
        chunk = q[split.tokens].to(dtype).transpose(0, 1)[None]  # [1, H, Lq, D]
        keys, values = (
            self._gather(c, split.slots[None], dtype) for c in (self.k_cache, self.v_cache)
        )
        attended = self._sdpa(chunk, keys, values, split.mask(window))
        out[split.tokens] = attended[0].transpose(0, 1).flatten(1).to(q.dtype)
        return out

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
        if batch.is_decode and batch.num_seqs == 1 and (window is None or num_keys <= window):
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
    """Attention runs in float32 on the CPU, for precision rather than speed.  PyTorch's
    bfloat16 attention takes bfloat16 matrix products and was faster on an Intel Xeon with
    AMX (SmolLM2's heads, µs a layer, gather included: 30 new tokens after 1,000 cached 343
    against 1,227 with the casts; 256 after 744 1,272 against 3,188), but it rounds each
    block's weights to bfloat16, so a prompt computed in one chunk and the same prompt
    from the prefix cache parted more: a greedy regenerated reply came out different
    (tests/server/test_sessions_api.py), where in float32 it was the same."""
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

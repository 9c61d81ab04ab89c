"""The Llama family: llama (SmolLM2), qwen2 (bias on q/k/v) and qwen3 (per-head QK-norm).

Pre-norm decoder blocks of grouped-query attention with rotary embeddings and a SwiGLU MLP.
Other families reuse `GatedMLP` and `Attention` from here when their blocks are the same,
and override `LlamaForCausalLM.make_layer` to swap a block's MLP or attention (the MoE
families in `mixtral.py`, `qwen_moe.py`, `olmoe.py`, `granitemoe.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from limelight.engine.layers.activation import activation
from limelight.engine.layers.attention import PagedAttention
from limelight.engine.layers.batch import ForwardBatch
from limelight.engine.layers.norm import RMSNorm
from limelight.engine.layers.rotary import RotaryEmbedding
from limelight.engine.models.base import CausalLM
from limelight.engine.models.config import ModelConfig


class GatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int, act: str, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)
        self.act = activation(act)
        self.gate_up_proj: nn.Linear | None = None  # set by `fuse`

    def fuse(self) -> None:
        """One matmul for gate and up (after the weights are loaded)."""
        self.gate_up_proj = fused_linear(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up_proj is None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # [T, I] each
        return self.down_proj(self.act(gate) * up)


class Attention(nn.Module):
    """Q/K/V projections, optional per-head QK-norm, rotary, paged attention, output."""

    def __init__(
        self,
        config: ModelConfig,
        rotary: RotaryEmbedding,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        sliding_window: int | None = None,
        scale: float | None = None,
        norm_offset: float = 0.0,
    ) -> None:
        super().__init__()
        h, kv, d, e = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
            config.hidden_size,
        )
        out_bias = bool(config.get("attention_bias", False)) and not qkv_bias
        self.q_proj = nn.Linear(e, h * d, bias=qkv_bias or out_bias)
        self.k_proj = nn.Linear(e, kv * d, bias=qkv_bias or out_bias)
        self.v_proj = nn.Linear(e, kv * d, bias=qkv_bias or out_bias)
        self.o_proj = nn.Linear(h * d, e, bias=out_bias)
        self.q_norm = RMSNorm(d, config.rms_norm_eps, norm_offset) if qk_norm else None
        self.k_norm = RMSNorm(d, config.rms_norm_eps, norm_offset) if qk_norm else None
        self.rotary = rotary
        self.attn = PagedAttention(h, kv, d, scale or d**-0.5, sliding_window=sliding_window)
        self.shape = (h, kv, d)
        self.qkv_proj: nn.Linear | None = None  # set by `fuse`

    def fuse(self) -> None:
        """One matmul for q, k and v (after the weights are loaded)."""
        self.qkv_proj = fused_linear(self.q_proj, self.k_proj, self.v_proj)
        del self.q_proj, self.k_proj, self.v_proj

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q [T, H * D], k and v [T, Hkv * D]."""
        if self.qkv_proj is None:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        h, kv, d = self.shape
        q, k, v = self.qkv_proj(x).split([h * d, kv * d, kv * d], dim=-1)
        return q, k, v

    def forward(self, x: Tensor, batch: ForwardBatch) -> Tensor:
        h, kv, d = self.shape
        q, k, v = self.project(x)
        q = q.view(-1, h, d)  # [T, H, D]
        k = k.view(-1, kv, d)  # [T, Hkv, D]
        v = v.view(-1, kv, d)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(batch.positions, q, k)
        return self.o_proj(self.attn(q, k, v, batch))


def fused_linear(*linears: nn.Linear) -> nn.Linear:
    """One linear whose output is the given linears' outputs side by side: a decode step
    makes one matmul call instead of several (each call costs tens of microseconds)."""
    first = linears[0]
    weight = torch.cat([linear.weight.detach() for linear in linears])  # [sum N, K]
    has_bias = first.bias is not None
    # on the meta device: its parameters are replaced at once, so none is allocated or drawn
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if has_bias:
        biases = [linear.bias.detach() for linear in linears if linear.bias is not None]
        fused.bias = nn.Parameter(torch.cat(biases), requires_grad=False)
    return fused


def fuse_projections(model: nn.Module) -> int:
    """Fuse the q/k/v and gate/up projections of every block that can; how many."""
    blocks = [m for m in model.modules() if isinstance(m, (Attention, GatedMLP))]
    for block in blocks:
        block.fuse()
    return len(blocks)


class DecoderLayer(nn.Module):
    """Pre-norm block; `mlp` / `self_attn` replace the default SwiGLU MLP / `Attention`."""

    def __init__(
        self,
        config: ModelConfig,
        rotary: RotaryEmbedding,
        mlp: nn.Module | None = None,
        self_attn: nn.Module | None = None,
        **attn_kwargs: Any,
    ) -> None:
        super().__init__()
        if self_attn is None:
            self_attn = Attention(config, rotary, **attn_kwargs)
        if mlp is None:
            mlp = GatedMLP(
                config.hidden_size,
                config.intermediate_size,
                config.get("hidden_act", "silu"),
                bias=bool(config.get("mlp_bias", False)),
            )
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, batch: ForwardBatch) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), batch)
        return x + self.mlp(self.post_attention_layernorm(x))


# (layer index, the shared rotary embedding) → one decoder block
LayerFactory = Callable[[int, RotaryEmbedding], nn.Module]


class DecoderModel(nn.Module):
    def __init__(
        self, config: ModelConfig, make_layer: LayerFactory | None = None, **attn_kwargs: Any
    ) -> None:
        super().__init__()
        rotary = RotaryEmbedding(config.rope, config.head_dim)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            make_layer(i, rotary) if make_layer else DecoderLayer(config, rotary, **attn_kwargs)
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: Tensor, batch: ForwardBatch) -> Tensor:
        x = self.embed_tokens(input_ids)  # [T, E]
        for layer in self.layers:
            x = layer(x, batch)
        return self.norm(x)


class LlamaForCausalLM(CausalLM):
    qkv_bias = False
    qk_norm = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = DecoderModel(config, self.make_layer)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def make_layer(self, index: int, rotary: RotaryEmbedding) -> nn.Module:
        """Decoder block `index`; families with other blocks (MoE, ...) override this."""
        return DecoderLayer(self.config, rotary, qkv_bias=self.qkv_bias, qk_norm=self.qk_norm)

    def forward(self, input_ids: Tensor, batch: ForwardBatch) -> Tensor:
        return self.model(input_ids, batch)

    def compute_logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(hidden).float()


class Qwen2ForCausalLM(LlamaForCausalLM):
    qkv_bias = True


class Qwen3ForCausalLM(LlamaForCausalLM):
    qk_norm = True

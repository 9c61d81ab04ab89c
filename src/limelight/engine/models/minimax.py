"""MiniMax-01 (`minimax`): a hybrid of lightning (linear) attention and softmax attention.

`layer_types` picks each layer's mixer: `linear_attention` layers keep a decayed state per
sequence (`LinearAttention`, with a head- and depth-dependent decay rate), `full_attention`
layers are Llama-style grouped-query attention with rotary over the whole head over the
paged KV cache.  Every layer ends in a mixtral-style sparse MoE.  Unlike Llama, the residual
stream is taken *after* each norm and mixed with per-kind factors:

    x = norm_1(x);  x = α_attn·x + β_attn·mixer(x);  x = norm_2(x);  x = α_mlp·x + β_mlp·moe(x)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from limelight.engine.layers.activation import activation
from limelight.engine.layers.batch import ForwardBatch
from limelight.engine.layers.linear_attention import LinearAttention
from limelight.engine.layers.moe import SparseMoE, is_stacked_loaded
from limelight.engine.layers.norm import RMSNorm
from limelight.engine.layers.rotary import RotaryEmbedding
from limelight.engine.models.config import ModelConfig
from limelight.engine.models.llama import Attention, LlamaForCausalLM
from limelight.engine.models.mixtral import load_expert_weight

LAYER_TYPES = ("linear_attention", "full_attention")
# Decay tables the reference stores as buffers; they follow from the config.
_RECOMPUTED = ("slope_rate", "query_decay", "key_decay", "diagonal_decay")


def lightning_slopes(num_heads: int, layer_idx: int, num_layers: int) -> Tensor:
    """[H] decay rates: a geometric series over heads, fading towards zero with depth."""
    base = 2.0 ** (-8.0 / num_heads)
    rates = base ** torch.arange(1, num_heads + 1, dtype=torch.float64)
    depth = 1 - layer_idx / (num_layers - 1 + 1e-5) + 1e-5  # the last layer barely forgets
    return (rates * depth).float()


def layer_types(config: ModelConfig) -> list[str]:
    n = config.num_hidden_layers
    # The reference's default alternates, starting with softmax attention.
    kinds = config.get("layer_types") or [LAYER_TYPES[(i + 1) % 2] for i in range(n)]
    if len(kinds) != n or any(kind not in LAYER_TYPES for kind in kinds):
        raise ValueError(
            f"model config: layer_types must list {n} entries from {LAYER_TYPES}, got {kinds}"
        )
    return list(kinds)


class LightningAttention(nn.Module):
    """SiLU'd fused QKV → decayed linear attention → RMSNorm over all heads → sigmoid gate."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        h, d, e = config.num_attention_heads, config.head_dim, config.hidden_size
        self.qkv_proj = nn.Linear(e, 3 * h * d, bias=False)
        self.output_gate = nn.Linear(e, h * d, bias=False)
        self.norm = RMSNorm(h * d, 1e-6)  # the reference leaves this norm at its default eps
        self.out_proj = nn.Linear(h * d, e, bias=False)
        self.act = activation(config.get("hidden_act", "silu"))
        slopes = lightning_slopes(h, layer_idx, config.num_hidden_layers)
        self.attn = LinearAttention(h, d, slopes)
        self.shape = (h, d)

    def forward(self, x: Tensor, batch: ForwardBatch) -> Tensor:
        h, d = self.shape
        qkv = self.act(self.qkv_proj(x)).view(-1, h, 3 * d)  # [T, H, 3D], q|k|v per head
        q, k, v = qkv.split(d, dim=-1)  # [T, H, D] each
        out = self.norm(self.attn(q, k, v, batch))  # [T, H * D]
        return self.out_proj(torch.sigmoid(self.output_gate(x)) * out)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding, layer_idx: int) -> None:
        super().__init__()
        self.self_attn: nn.Module
        if layer_types(config)[layer_idx] == "linear_attention":
            self.self_attn = LightningAttention(config, layer_idx)
            kind = "linear_attn"
        else:
            self.self_attn = Attention(config, rotary, sliding_window=config.get("sliding_window"))
            kind = "full_attn"
        self.attn_factors = _factors(config, kind)
        self.mlp_factors = _factors(config, "mlp")
        self.block_sparse_moe = SparseMoE(
            config.hidden_size,
            config.intermediate_size,
            int(config.get("num_local_experts", 8)),
            int(config.get("num_experts_per_tok", 2)),
            routing="softmax_topk",
            normalize_topk=True,
            act=config.get("hidden_act", "silu"),
        )
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, batch: ForwardBatch) -> Tensor:
        alpha, beta = self.attn_factors
        x = self.input_layernorm(x)
        x = alpha * x + beta * self.self_attn(x, batch)
        alpha, beta = self.mlp_factors
        x = self.post_attention_layernorm(x)
        return alpha * x + beta * self.block_sparse_moe(x)


def _factors(config: ModelConfig, kind: str) -> tuple[float, float]:
    """(α, β): the weights of the residual and of the block's output."""
    alpha, beta = config.get(f"{kind}_alpha_factor", 1.0), config.get(f"{kind}_beta_factor", 1.0)
    return float(alpha), float(beta)


class MiniMaxForCausalLM(LlamaForCausalLM):
    """Llama's embedding, final norm and head around MiniMax's hybrid blocks."""

    def make_layer(self, index: int, rotary: RotaryEmbedding) -> nn.Module:
        return DecoderLayer(self.config, rotary, index)

    def skipped_weight(self, name: str) -> bool:
        return super().skipped_weight(name) or name.rsplit(".", 1)[-1] in _RECOMPUTED

    def load_weight(self, name: str, tensor: Tensor, params: dict[str, nn.Parameter]) -> bool:
        """Per-expert checkpoint tensors (`experts.3.w1.weight`) fill the stacked experts."""
        return load_expert_weight(self, name, tensor)

    def is_loaded_elsewhere(self, param_name: str, loaded: set[str]) -> bool:
        return is_stacked_loaded(self, param_name, loaded)

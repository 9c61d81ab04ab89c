"""The Qwen MoE family: qwen2_moe (Qwen1.5-MoE, Qwen2-57B-A14B) and qwen3_moe (Qwen3-30B-A3B).

One file for both, as `llama.py` holds qwen2 and qwen3: qwen3_moe is qwen2_moe with
per-head QK-norm instead of q/k/v biases and without the shared expert; the rest is one
code path.  Both route softmax → top-k, renormalised only when `norm_topk_prob`, and put
a dense SwiGLU MLP (`intermediate_size`) instead of the MoE on the layers listed in
`mlp_only_layers` or off the `decoder_sparse_step` grid.  qwen2_moe adds a shared expert
(`shared_expert_intermediate_size`) gated by a per-token sigmoid, and sliding windows per
layer (`layer_types`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from limelight.engine.models.config import ModelConfig
from limelight.engine.models.llama import GatedMLP
from limelight.engine.models.mixtral import MixtralForCausalLM, sparse_moe


def is_sparse_layer(config: ModelConfig, index: int) -> bool:
    num_experts = config.get("num_experts") or config.get("num_local_experts") or 0
    step = int(config.get("decoder_sparse_step", 1))
    return (
        index not in config.get("mlp_only_layers", [])
        and num_experts > 0
        and ((index + 1) % step == 0)
    )


def qwen2_sliding_window(config: ModelConfig, index: int) -> int | None:
    """Layer `index`'s window: from `layer_types`, or transformers' rule when it is absent."""
    types = config.get("layer_types")
    if types is not None:
        is_sliding = types[index] == "sliding_attention"
    else:
        is_sliding = (
            bool(config.get("use_sliding_window", False))
            and index % 2 == 0
            and index < int(config.get("max_window_layers", 28))
        )
    return (config.get("sliding_window") or None) if is_sliding else None


class Qwen2MoeForCausalLM(MixtralForCausalLM):
    checkpoint_renames = ()
    has_shared_expert = True

    def make_mlp(self, index: int) -> nn.Module:
        config = self.config
        act = config.get("hidden_act", "silu")
        if not is_sparse_layer(config, index):
            return GatedMLP(config.hidden_size, config.intermediate_size, act)
        shared = None
        if self.has_shared_expert:
            size = int(config.get("shared_expert_intermediate_size", config.intermediate_size))
            shared = GatedMLP(config.hidden_size, size, act)
        return sparse_moe(
            config,
            routing="softmax_topk",
            normalize_topk=bool(config.get("norm_topk_prob", False)),
            shared_expert=shared,
            shared_expert_gate=shared is not None,
        )

    def attention_options(self, index: int) -> dict[str, Any]:
        return {
            "qkv_bias": bool(self.config.get("qkv_bias", True)),
            "sliding_window": qwen2_sliding_window(self.config, index),
        }


class Qwen3MoeForCausalLM(Qwen2MoeForCausalLM):
    has_shared_expert = False

    def attention_options(self, index: int) -> dict[str, Any]:
        is_sliding = bool(self.config.get("use_sliding_window", False))
        return {
            "qk_norm": True,
            "sliding_window": self.config.get("sliding_window") if is_sliding else None,
        }

"""Mixtral: Llama blocks whose MLP is a `SparseMoE`, and the base of the other MoE families.

Routing is softmax over all experts, top-k, renormalised.  `MixtralForCausalLM` also owns
what every MoE family here shares: building a `SparseMoE` from a config, renaming
checkpoint tensors onto the module tree (`checkpoint_renames`), and filling the stacked
expert parameters from either checkpoint layout:
  - per expert, as checkpoints on disk are (and as transformers 5 `save_pretrained`
    writes them): `model.layers.0.block_sparse_moe.experts.3.w1.weight` `[I, H]`;
  - fused, as transformers 5 holds them in memory: `model.layers.0.mlp.experts.gate_up_proj`
    `[E, 2I, H]`, loaded by name.
The families (`qwen_moe`, `olmoe`, `granitemoe`) override `make_layer` / `make_mlp`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from limelight.engine.errors import CheckpointError
from limelight.engine.layers.moe import SparseMoE, expert_tensor, is_stacked_loaded
from limelight.engine.layers.rotary import RotaryEmbedding
from limelight.engine.models.base import WeightError
from limelight.engine.models.config import ModelConfig
from limelight.engine.models.llama import DecoderLayer, LlamaForCausalLM


def sparse_moe(config: ModelConfig, **options: Any) -> SparseMoE:
    """A `SparseMoE` sized from the config; `options` are its router options."""
    num_experts = config.get("num_local_experts") or config.get("num_experts")
    if not num_experts:
        raise CheckpointError(
            f"{config.model_type} config.json names no experts (num_local_experts / num_experts)"
        )
    return SparseMoE(
        config.hidden_size,
        config.get("moe_intermediate_size") or config.intermediate_size,
        int(num_experts),
        int(config.get("num_experts_per_tok", 2)),
        act=config.get("hidden_act", "silu"),
        **options,
    )


def load_expert_weight(model: nn.Module, name: str, tensor: Tensor) -> bool:
    """Copy a per-expert checkpoint tensor into its stacked slice; False if not one."""
    target = expert_tensor(model, name)
    if target is None:
        return False
    if target.shape != tensor.shape:
        raise WeightError(
            f"tensor {name!r} has shape {tuple(tensor.shape)}, "
            f"the architecture expects {tuple(target.shape)}"
        )
    target.copy_(tensor)
    return True


class MixtralForCausalLM(LlamaForCausalLM):
    # (old, new) substrings applied in order to every checkpoint tensor name
    checkpoint_renames: tuple[tuple[str, str], ...] = ((".block_sparse_moe.", ".mlp."),)

    def make_layer(self, index: int, rotary: RotaryEmbedding) -> nn.Module:
        return DecoderLayer(
            self.config, rotary, mlp=self.make_mlp(index), **self.attention_options(index)
        )

    def make_mlp(self, index: int) -> nn.Module:
        return sparse_moe(self.config, routing="softmax_topk", normalize_topk=True)

    def attention_options(self, index: int) -> dict[str, Any]:
        """Keyword arguments of layer `index`'s `Attention`."""
        return {
            "qkv_bias": self.qkv_bias,
            "qk_norm": self.qk_norm,
            "sliding_window": self.config.get("sliding_window"),
        }

    def checkpoint_name(self, name: str) -> str:
        for old, new in self.checkpoint_renames:
            name = name.replace(old, new)
        return name

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        super().load_weights((self.checkpoint_name(name), t) for name, t in weights)

    def load_weight(self, name: str, tensor: Tensor, params: dict[str, nn.Parameter]) -> bool:
        return load_expert_weight(self, name, tensor)

    def is_loaded_elsewhere(self, param_name: str, loaded: set[str]) -> bool:
        return is_stacked_loaded(self, param_name, loaded)

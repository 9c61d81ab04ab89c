"""Gemma 3 text: `gemma3_text`, and the language half of multimodal `gemma3` checkpoints.

The block reuses Llama's `Attention` and `GatedMLP` and differs from it in:
- local (sliding-window) and global layers, per `layer_types`, each kind with its own rotary
  table (`rope_parameters` per layer type, or the older `rope_theta` / `rope_local_base_freq`);
- QK-norm, and every RMSNorm scaling by `1 + weight`;
- four norms per block: the attention and MLP outputs are normalised before the residual add;
- embeddings multiplied by `sqrt(hidden_size)`, and attention scaled by
  `query_pre_attn_scalar ** -0.5` rather than `head_dim ** -0.5`;
- tanh-capped final logits when `final_logit_softcapping` is set.

`attn_logit_softcapping` is read by nobody: Gemma 3 replaced it with QK-norm and the
transformers reference ignores it, so honouring it would break parity with the checkpoints.
This file reads Hugging Face names and weights; the GGUF loader maps its metadata onto these
keys and undoes the `+1` that GGUF bakes into norm weights.  Vision weights are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from limelight.engine.errors import CheckpointError
from limelight.engine.layers.batch import ForwardBatch
from limelight.engine.layers.norm import RMSNorm
from limelight.engine.layers.rotary import RotaryEmbedding
from limelight.engine.models.base import CausalLM
from limelight.engine.models.config import ModelConfig
from limelight.engine.models.llama import Attention, GatedMLP

SLIDING, FULL = "sliding_attention", "full_attention"
# transformers' defaults for keys an older or hand-written config may leave out
DEFAULT_SLIDING_WINDOW_PATTERN = 6  # every 6th layer is global
DEFAULT_GLOBAL_ROPE_THETA = 1_000_000.0
DEFAULT_LOCAL_ROPE_THETA = 10_000.0
DEFAULT_QUERY_PRE_ATTN_SCALAR = 256
# multimodal checkpoint prefixes of the language model, and of the parts we do not run
_TEXT_PREFIXES = {
    "language_model.model.": "model.",
    "model.language_model.": "model.",
    "language_model.lm_head.": "lm_head.",
}
_VISION_PREFIXES = (
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
)


def layer_types(config: ModelConfig) -> list[str]:
    """Each layer's attention kind, from `layer_types` or the older `sliding_window_pattern`."""
    n = config.num_hidden_layers
    types = config.get("layer_types")
    if not types:
        pattern = int(
            config.get("sliding_window_pattern")
            or config.get("_sliding_window_pattern")
            or DEFAULT_SLIDING_WINDOW_PATTERN
        )
        types = [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(n)]
    if len(types) != n or not set(types) <= {SLIDING, FULL}:
        raise CheckpointError(
            f"gemma3 config: layer_types must list {n} entries, each {SLIDING!r} or {FULL!r}; "
            f"got {types!r}"
        )
    return list(types)


def rope_by_layer_type(config: ModelConfig) -> dict[str, dict[str, Any]]:
    """Rotary parameters of the local and global layers, from either config format.

    transformers v5 writes `rope_parameters = {"sliding_attention": {...}, "full_attention":
    {...}}`; older configs give `rope_theta` and `rope_scaling` for the global layers and
    `rope_local_base_freq` for the local ones (which are never scaled).
    """
    params = config.get("rope_parameters") or {}
    if not all(isinstance(v, dict) for v in params.values()):
        params = {FULL: params}  # one flat dict: the global layers' parameters
    full = {**(config.get("rope_scaling") or {}), **(params.get(FULL) or {})}
    full.setdefault("rope_theta", config.get("rope_theta", DEFAULT_GLOBAL_ROPE_THETA))
    local = dict(params.get(SLIDING) or {})
    local.setdefault("rope_theta", config.get("rope_local_base_freq", DEFAULT_LOCAL_ROPE_THETA))
    return {FULL: _with_rope_type(full), SLIDING: _with_rope_type(local)}


def _with_rope_type(rope: dict[str, Any]) -> dict[str, Any]:
    rope["rope_type"] = rope.get("rope_type") or rope.get("type") or "default"
    return rope


def _norm(config: ModelConfig) -> RMSNorm:
    return RMSNorm(config.hidden_size, config.rms_norm_eps, offset=1.0)


class Gemma3DecoderLayer(nn.Module):
    def __init__(
        self, config: ModelConfig, rotary: RotaryEmbedding, sliding_window: int | None
    ) -> None:
        super().__init__()
        scalar = float(config.get("query_pre_attn_scalar", DEFAULT_QUERY_PRE_ATTN_SCALAR))
        self.self_attn = Attention(
            config,
            rotary,
            qk_norm=True,
            sliding_window=sliding_window,
            scale=scalar**-0.5,
            norm_offset=1.0,
        )
        self.mlp = GatedMLP(
            config.hidden_size,
            config.intermediate_size,
            config.get("hidden_activation", "gelu_pytorch_tanh"),
        )
        self.input_layernorm = _norm(config)
        self.post_attention_layernorm = _norm(config)
        self.pre_feedforward_layernorm = _norm(config)
        self.post_feedforward_layernorm = _norm(config)

    def forward(self, x: Tensor, batch: ForwardBatch) -> Tensor:
        """x [T, E] → [T, E]."""
        attn = self.self_attn(self.input_layernorm(x), batch)
        x = x + self.post_attention_layernorm(attn)
        mlp = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(mlp)


class Gemma3Model(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.get("use_bidirectional_attention", False):
            raise CheckpointError(
                "gemma3 config: bidirectional (embedding) Gemma 3 models are not supported; "
                "limelight runs causal language models only"
            )
        types = layer_types(config)
        ropes = rope_by_layer_type(config)
        rotaries = {kind: RotaryEmbedding(ropes[kind], config.head_dim) for kind in set(types)}
        window = config.get("sliding_window")
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_scale = config.hidden_size**0.5
        self.layers = nn.ModuleList(
            Gemma3DecoderLayer(config, rotaries[kind], window if kind == SLIDING else None)
            for kind in types
        )
        self.norm = _norm(config)

    def forward(self, input_ids: Tensor, batch: ForwardBatch) -> Tensor:
        x = self.embed_tokens(input_ids)  # [T, E]
        # the scale is rounded to the activation dtype first, as the reference does
        x = x * torch.tensor(self.embed_scale, dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x = layer(x, batch)
        return self.norm(x)


class Gemma3ForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.final_softcap: float | None = config.get("final_logit_softcapping")
        self.model = Gemma3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: Tensor, batch: ForwardBatch) -> Tensor:
        return self.model(input_ids, batch)

    def compute_logits(self, hidden: Tensor) -> Tensor:
        logits = self.lm_head(hidden).float()  # [N, V]
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def skipped_weight(self, name: str) -> bool:
        return super().skipped_weight(name) or name.startswith(_VISION_PREFIXES)

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        """Also takes multimodal checkpoints, whose language model sits under another prefix."""
        super().load_weights((_text_name(name), tensor) for name, tensor in weights)


def _text_name(name: str) -> str:
    for prefix, replacement in _TEXT_PREFIXES.items():
        if name.startswith(prefix):
            return replacement + name.removeprefix(prefix)
    return name

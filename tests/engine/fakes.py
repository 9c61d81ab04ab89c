"""Small real models and a byte tokenizer for engine tests (no packaged weights needed)."""

from __future__ import annotations

from typing import ClassVar

import torch

from limelight.engine.llm_engine import LLMEngine
from limelight.engine.models import CausalLM, ModelConfig, model_class
from limelight.engine.types import EngineConfig

EOS = 0
VOCAB = 260  # ids 4..259 are bytes


class ByteTokenizer:
    """UTF-8 bytes as tokens (id = byte + 4): multi-byte characters span several tokens."""

    eos_token_ids: ClassVar[list[int]] = [EOS]
    bos_token_id = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [b + 4 for b in text.encode()]

    def encode_prompt(self, text: str) -> list[int]:
        return self.encode(text)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(i - 4 for i in ids if i >= 4).decode(errors="replace")


def tiny_config(model_type: str = "llama", **extra: object) -> ModelConfig:
    raw = {
        "model_type": model_type,
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        **extra,
    }
    return ModelConfig.from_hf(raw)


def tiny_model(config: ModelConfig | None = None, seed: int = 0) -> CausalLM:
    """Random weights with a wide spread, so that greedy choices are rarely near-ties."""
    config = config or tiny_config()
    torch.manual_seed(seed)
    model = model_class(config.model_type)(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.3 if "embed" not in name else 1.0)
    return model.eval()


def tiny_engine(model: CausalLM | None = None, **options: object) -> LLMEngine:
    return LLMEngine(model or tiny_model(), ByteTokenizer(), EngineConfig(**options))  # type: ignore[arg-type]

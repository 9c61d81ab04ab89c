"""Architectures by their Hugging Face `model_type`: one file per family.

`model_class()` is the only way the engine picks an architecture; an unknown name gets an
error that lists what is supported.
"""

from __future__ import annotations

from limelight.engine.errors import CheckpointError
from limelight.engine.models.base import CausalLM
from limelight.engine.models.config import ModelConfig
from limelight.engine.models.gemma3 import Gemma3ForCausalLM
from limelight.engine.models.granitemoe import GraniteMoeForCausalLM
from limelight.engine.models.llama import LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM
from limelight.engine.models.minimax import MiniMaxForCausalLM
from limelight.engine.models.mixtral import MixtralForCausalLM
from limelight.engine.models.olmoe import OlmoeForCausalLM
from limelight.engine.models.qwen_moe import Qwen2MoeForCausalLM, Qwen3MoeForCausalLM

MODEL_CLASSES: dict[str, type[CausalLM]] = {
    "gemma3_text": Gemma3ForCausalLM,
    "granitemoe": GraniteMoeForCausalLM,
    "llama": LlamaForCausalLM,
    "minimax": MiniMaxForCausalLM,
    "mixtral": MixtralForCausalLM,
    "olmoe": OlmoeForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "qwen2_moe": Qwen2MoeForCausalLM,
    "qwen3": Qwen3ForCausalLM,
    "qwen3_moe": Qwen3MoeForCausalLM,
}


class UnsupportedArchitectureError(CheckpointError):
    def __init__(self, model_type: str) -> None:
        self.model_type = model_type
        super().__init__(
            f"architecture {model_type!r} is not supported; "
            f"supported architectures: {', '.join(supported_architectures())}"
        )


def supported_architectures() -> list[str]:
    return sorted(MODEL_CLASSES)


def model_class(model_type: str) -> type[CausalLM]:
    if model_type not in MODEL_CLASSES:
        raise UnsupportedArchitectureError(model_type)
    return MODEL_CLASSES[model_type]


__all__ = [
    "MODEL_CLASSES",
    "CausalLM",
    "ModelConfig",
    "UnsupportedArchitectureError",
    "model_class",
    "supported_architectures",
]

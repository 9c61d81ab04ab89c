"""`ModelConfig`: an architecture's hyper-parameters, in Hugging Face `config.json` terms.

Both loaders produce one: the safetensors loader reads `config.json`, the GGUF loader maps
GGUF metadata onto the same keys.  Common fields are typed attributes; anything specific to
one architecture stays in `raw` and is read by that architecture's model file through
`get()`.  This module does not know which architectures exist (see `models/__init__.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope: dict[str, Any]  # rope_type, rope_theta and the type's own parameters
    raw: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model config: {name} must be positive")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"model config: {self.num_attention_heads} attention heads cannot be grouped "
                f"over {self.num_key_value_heads} key/value heads"
            )

    def get(self, key: str, default: Any = None) -> Any:
        value = self.raw.get(key, default)
        return default if value is None else value

    @staticmethod
    def from_hf(config: dict[str, Any]) -> ModelConfig:
        """Build from a `config.json` dict (a multimodal wrapper's `text_config` is used)."""
        if "text_config" in config and "hidden_size" not in config:
            config = {
                **config["text_config"],
                "tie_word_embeddings": config.get(
                    "tie_word_embeddings", config["text_config"].get("tie_word_embeddings", True)
                ),
            }
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return ModelConfig(
            model_type=config["model_type"],
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config.get("intermediate_size") or 0,
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=config.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=config.get("rms_norm_eps") or config.get("layer_norm_eps") or 1e-6,
            max_position_embeddings=config.get("max_position_embeddings") or 4096,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope=_rope_parameters(config),
            raw=dict(config),
        )


def _rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """Normalise the old (`rope_theta` + `rope_scaling`) and new (`rope_parameters`) forms.

    Models with per-layer-type rope (Gemma 3) keep the nested dict; they read it themselves.
    """
    params = config.get("rope_parameters")
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        return dict(params)
    rope = dict(params or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope["rope_type"] = rope.get("rope_type") or rope.get("type") or "default"
    return rope

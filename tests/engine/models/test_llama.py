from pathlib import Path

import pytest
from transformers import LlamaConfig, Qwen2Config, Qwen3Config

from tests.engine.models.parity import check_parity

TINY = dict(
    vocab_size=211,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


@pytest.mark.parametrize(
    "config",
    [
        LlamaConfig(**TINY),
        LlamaConfig(**TINY, tie_word_embeddings=True, attention_bias=True),
        LlamaConfig(
            **TINY,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
        Qwen2Config(**TINY),
        Qwen3Config(**TINY, head_dim=24),
    ],
    ids=["llama", "llama-tied-bias", "llama3-rope", "qwen2", "qwen3"],
)
def test_matches_transformers(config: object, tmp_path: Path) -> None:
    check_parity(config, tmp_path)  # type: ignore[arg-type]

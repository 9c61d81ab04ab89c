from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

from limelight.engine.errors import CheckpointError
from limelight.engine.models.config import ModelConfig
from limelight.engine.models.gemma3 import Gemma3ForCausalLM, layer_types, rope_by_layer_type
from tests.engine.models.parity import NUM_DECODE, check_parity

# prompts of up to 11 tokens plus NUM_DECODE steps: a window of 5 slides in prefill and decode
WINDOW = 5
TINY: dict[str, Any] = dict(
    vocab_size=211,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=24,
    sliding_window=WINDOW,
    max_position_embeddings=256,
)
LAYERS = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]


@pytest.fixture(autouse=True)
def random_norm_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers initialises Gemma norm weights to zero, which would hide a wrong `1 + w`."""
    build = AutoModelForCausalLM.from_config

    def from_config(config: Any, **kwargs: Any) -> Any:
        model = build(config, **kwargs)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.normal_(0.0, 0.5)
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", from_config)


@pytest.mark.parametrize(
    "config",
    [
        Gemma3TextConfig(**TINY, layer_types=LAYERS),
        Gemma3TextConfig(
            **TINY | dict(num_key_value_heads=1, num_hidden_layers=5),
            sliding_window_pattern=2,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 2000.0},
            },
            tie_word_embeddings=False,
        ),
        Gemma3TextConfig(
            **TINY,
            layer_types=LAYERS,
            final_logit_softcapping=0.1,
            attn_logit_softcapping=0.5,
            attention_bias=True,
        ),
    ],
    ids=["gqa", "mqa-pattern-linear-rope-untied", "softcap-bias"],
)
def test_matches_transformers(config: Gemma3TextConfig, tmp_path: Path) -> None:
    assert config.sliding_window < 11 + NUM_DECODE
    check_parity(config, tmp_path)


def test_multimodal_checkpoint_loads_its_language_model(tmp_path: Path) -> None:
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    text = Gemma3TextConfig(**TINY, layer_types=LAYERS)
    config = Gemma3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4
    )
    config.vocab_size = text.vocab_size  # the harness draws token ids below this
    check_parity(config, tmp_path)


def _model_config(**raw: Any) -> ModelConfig:
    return ModelConfig.from_hf({"model_type": "gemma3_text", **TINY, **raw})


def test_older_config_keys_read_as_transformers_reads_them() -> None:
    old = dict(
        num_hidden_layers=7,
        sliding_window_pattern=3,
        rope_theta=5e5,
        rope_local_base_freq=123.0,
        rope_scaling={"rope_type": "linear", "factor": 8.0},
    )
    reference = Gemma3TextConfig(**TINY | old)
    ours = _model_config(**old)
    assert layer_types(ours) == reference.layer_types
    assert rope_by_layer_type(ours) == reference.rope_parameters


def test_defaults_match_transformers() -> None:
    reference = Gemma3TextConfig(**TINY | dict(num_hidden_layers=12))
    ours = _model_config(num_hidden_layers=12)
    assert layer_types(ours) == reference.layer_types
    assert rope_by_layer_type(ours) == reference.rope_parameters


@pytest.mark.parametrize(
    "raw",
    [
        dict(layer_types=["sliding_attention"] * 3),
        dict(layer_types=["chunked_attention"] * 4),
        dict(use_bidirectional_attention=True),
    ],
    ids=["too-few", "unknown-kind", "bidirectional"],
)
def test_bad_configs_are_named(raw: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError, match="gemma3 config"):
        Gemma3ForCausalLM(_model_config(**raw))

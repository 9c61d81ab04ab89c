"""The MoE architectures against transformers, and both checkpoint layouts of their experts.

transformers 5 `save_pretrained` writes experts one by one, as checkpoints on disk are
(`experts.3.w1.weight`; granitemoe: stacked `input_linear`), so `check_parity` covers that
layout; the fused in-memory layout (`mlp.experts.gate_up_proj`) is covered by re-saving
the reference's `state_dict()`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    GraniteMoeConfig,
    MixtralConfig,
    OlmoeConfig,
    PretrainedConfig,
    Qwen2MoeConfig,
    Qwen3MoeConfig,
)

from limelight.engine.layers.moe import SparseMoE
from tests.engine.models.parity import (
    NUM_DECODE,
    check_parity,
    load_limelight,
    paged_logits,
)

TINY = dict(
    vocab_size=211,
    hidden_size=64,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    num_experts_per_tok=2,
)

CONFIGS: dict[str, PretrainedConfig] = {
    "mixtral": MixtralConfig(**TINY, num_local_experts=8),
    "mixtral-sliding": MixtralConfig(**TINY, num_local_experts=4, sliding_window=6),
    "qwen2_moe": Qwen2MoeConfig(
        **TINY, num_experts=6, moe_intermediate_size=32, shared_expert_intermediate_size=40
    ),
    "qwen2_moe-dense-layer-sliding": Qwen2MoeConfig(
        **TINY,
        num_experts=4,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=40,
        norm_topk_prob=True,
        mlp_only_layers=[0],
        use_sliding_window=True,
        sliding_window=6,
        max_window_layers=2,
    ),
    "qwen3_moe": Qwen3MoeConfig(**TINY, num_experts=8, moe_intermediate_size=32, head_dim=24),
    "qwen3_moe-sparse-step": Qwen3MoeConfig(
        **TINY,
        num_experts=4,
        moe_intermediate_size=32,
        norm_topk_prob=True,
        decoder_sparse_step=2,
        attention_bias=True,
    ),
    "olmoe": OlmoeConfig(**TINY, num_experts=8),
    "olmoe-clip-bias": OlmoeConfig(
        **TINY, num_experts=4, clip_qkv=0.5, attention_bias=True, norm_topk_prob=True
    ),
    "granitemoe": GraniteMoeConfig(
        **TINY,
        num_local_experts=8,
        embedding_multiplier=6.0,
        attention_multiplier=0.03,
        residual_multiplier=0.3,
        logits_scaling=4.0,
    ),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_matches_transformers(config: PretrainedConfig, tmp_path: Path) -> None:
    check_parity(config, tmp_path)


def test_sparse_layer_layout(tmp_path: Path) -> None:
    """qwen MoE: dense MLPs where `mlp_only_layers` / `decoder_sparse_step` say so."""
    for name, sparse in [
        ("qwen2_moe-dense-layer-sliding", [False, True]),
        ("qwen3_moe-sparse-step", [False, True]),
        ("qwen2_moe", [True, True]),
    ]:
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(CONFIGS[name]).save_pretrained(tmp_path / name)
        model = load_limelight(tmp_path / name)
        assert [isinstance(layer.mlp, SparseMoE) for layer in model.model.layers] == sparse


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe"])
def test_fused_checkpoint_layout(name: str, tmp_path: Path) -> None:
    """A checkpoint of transformers' in-memory names (fused experts) gives the same logits."""
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(CONFIGS[name]).float().eval()
    per_expert, fused = tmp_path / "per_expert", tmp_path / "fused"
    reference.save_pretrained(per_expert)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    assert any(k.endswith("experts.gate_up_proj") for k in state)
    fused.mkdir()
    shutil.copy(per_expert / "config.json", fused / "config.json")
    save_file(state, fused / "model.safetensors")

    prompt_lens = [5, 2]
    sequences = [[(7 * i + 3 * n) % 211 for i in range(n + NUM_DECODE)] for n in prompt_lens]
    want = paged_logits(load_limelight(per_expert), sequences, prompt_lens)
    got = paged_logits(load_limelight(fused), sequences, prompt_lens)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, atol=0.0, rtol=0.0)

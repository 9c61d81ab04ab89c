"""The GGUF loader: dequantization, header parsing and errors, and the HF name/layout mapping.

Block formats are checked against references independent of the loader: round trips through
`gguf.quants.quantize` where the package can quantize, and scalar transcriptions of ggml's
`dequantize_row_q*_K` (ggml-quants.c) for the K-quants, on random blocks and on blocks of
the real Gemma 3 file.  Tiny transformers models written out the way llama.cpp's converter
writes them (names, Q/K interleave, Gemma's `1 + w` norms) must load back to the same
tensors, config and logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize, quantize
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from limelight.engine.errors import CheckpointError
from limelight.engine.loader.gguf import (
    GGUFFile,
    hf_name,
    iter_gguf_weights,
    read_gguf_config,
    unpermute_rows,
)
from limelight.engine.models import UnsupportedArchitectureError, model_class
from tests.engine.models.parity import NUM_DECODE, TOLERANCE, paged_logits

Q = GGMLQuantizationType
ROWS, COLS = 6, 512  # COLS: two 256-value K-quant super-blocks per row


def write_gguf(
    path: Path,
    arch: str,
    tensors: Mapping[str, tuple[np.ndarray, Q | None]],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """A GGUF file with these tensors (raw block bytes where a type is given)."""
    writer = GGUFWriter(path, arch)
    for key, value in (metadata or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    for name, (data, raw_dtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_one(path: Path) -> torch.Tensor:
    file = GGUFFile.open(path)
    return file.read(file.tensors[0])


# --- dequantization ---------------------------------------------------------------------------

# type → largest error per block, as a multiple of the block's largest magnitude
ROUND_TRIP_BOUNDS = {
    Q.F32: 0.0,
    Q.F16: 1e-3,
    Q.BF16: 8e-3,
    Q.Q8_0: 1 / 127,
    Q.Q5_0: 1 / 16 + 1e-3,
    Q.Q4_0: 1 / 8 + 1e-3,
    Q.Q4_1: 2 / 15 + 1e-3,
}


@pytest.mark.parametrize("qtype", list(ROUND_TRIP_BOUNDS), ids=lambda q: q.name)
def test_round_trip_through_gguf_quantize(tmp_path: Path, qtype: Q) -> None:
    original = np.random.default_rng(0).standard_normal((ROWS, COLS)).astype(np.float32)
    if qtype == Q.F32:
        stored, raw = original, None
    elif qtype == Q.F16:
        stored, raw = original.astype(np.float16), None
    else:
        stored, raw = quantize(original, qtype), qtype
    got = read_one(write_gguf(tmp_path / "q.gguf", "llama", {"w": (stored, raw)}))
    assert got.dtype == torch.float32 and got.shape == (ROWS, COLS)
    blocks = original.reshape(ROWS, -1, 32)
    error = np.abs(got.numpy().reshape(blocks.shape) - blocks).max(axis=-1)
    assert (error <= ROUND_TRIP_BOUNDS[qtype] * np.abs(blocks).max(axis=-1) + 1e-7).all()
    if raw is not None:
        assert np.array_equal(got.numpy(), dequantize(stored, qtype))


def _f16(raw: np.ndarray) -> np.ndarray:
    return raw.view(np.float16).astype(np.float32)


def _scale_min_k4(j: int, q: np.ndarray) -> tuple[int, int]:
    """ggml's get_scale_min_k4: 6-bit scale and min number j of a K-quant's 12 bytes."""
    if j < 4:
        return int(q[j] & 63), int(q[j + 4] & 63)
    return (
        int((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)),
        int((q[j + 4] >> 4) | ((q[j] >> 6) << 4)),
    )


def reference_q4_k(block: np.ndarray) -> np.ndarray:
    d, dmin, scales, qs = _f16(block[0:2])[0], _f16(block[2:4])[0], block[4:16], block[16:144]
    out = []
    for n in range(4):  # 64 values per step: low nibbles, then high nibbles of 32 bytes
        (sc1, m1), (sc2, m2) = _scale_min_k4(2 * n, scales), _scale_min_k4(2 * n + 1, scales)
        q = qs[32 * n : 32 * n + 32]
        out += [d * sc1 * (q & 0xF) - dmin * m1, d * sc2 * (q >> 4) - dmin * m2]
    return np.concatenate(out)


def reference_q5_k(block: np.ndarray) -> np.ndarray:
    d, dmin, scales = _f16(block[0:2])[0], _f16(block[2:4])[0], block[4:16]
    qh, ql = block[16:48], block[48:176]
    out = []
    for n in range(4):
        (sc1, m1), (sc2, m2) = _scale_min_k4(2 * n, scales), _scale_min_k4(2 * n + 1, scales)
        q = ql[32 * n : 32 * n + 32]
        high1 = np.where(qh & (1 << (2 * n)), 16, 0)
        high2 = np.where(qh & (2 << (2 * n)), 16, 0)
        out += [d * sc1 * ((q & 0xF) + high1) - dmin * m1, d * sc2 * ((q >> 4) + high2) - dmin * m2]
    return np.concatenate(out)


def reference_q6_k(block: np.ndarray) -> np.ndarray:
    ql, qh = block[0:128].astype(np.int32), block[128:192].astype(np.int32)
    scales, d = block[192:208].view(np.int8).astype(np.float32), _f16(block[208:210])[0]
    out = np.empty(256, np.float32)
    for half in range(2):
        low, high, sc = ql[64 * half :], qh[32 * half :], scales[8 * half :]
        for col in range(32):
            k = col // 16
            q1 = ((low[col] & 0xF) | ((high[col] & 3) << 4)) - 32
            q2 = ((low[col + 32] & 0xF) | (((high[col] >> 2) & 3) << 4)) - 32
            q3 = ((low[col] >> 4) | (((high[col] >> 4) & 3) << 4)) - 32
            q4 = ((low[col + 32] >> 4) | (((high[col] >> 6) & 3) << 4)) - 32
            base = 128 * half + col
            out[base] = d * sc[k] * q1
            out[base + 32] = d * sc[k + 2] * q2
            out[base + 64] = d * sc[k + 4] * q3
            out[base + 96] = d * sc[k + 6] * q4
    return out


K_QUANTS = {
    Q.Q4_K: (144, reference_q4_k),
    Q.Q5_K: (176, reference_q5_k),
    Q.Q6_K: (210, reference_q6_k),
}


def reference_rows(blocks: np.ndarray, qtype: Q) -> np.ndarray:
    size, reference = K_QUANTS[qtype]
    rows = blocks.reshape(blocks.shape[0], -1, size)
    return np.stack([np.concatenate([reference(b) for b in row]) for row in rows])


def random_k_blocks(qtype: Q, rng: np.random.Generator) -> np.ndarray:
    size, _ = K_QUANTS[qtype]
    blocks = rng.integers(0, 256, (ROWS, COLS // 256, size), dtype=np.uint8)
    scale = rng.uniform(0.001, 0.05, (ROWS, COLS // 256, 2)).astype(np.float16).view(np.uint8)
    if qtype == Q.Q6_K:  # d is the last two bytes
        blocks[..., 208:210] = scale[..., :2]
    else:  # d and dmin lead
        blocks[..., 0:4] = scale
    return blocks.reshape(ROWS, -1)


@pytest.mark.parametrize("qtype", list(K_QUANTS), ids=lambda q: q.name)
def test_k_quants_match_ggml_reference(tmp_path: Path, qtype: Q) -> None:
    blocks = random_k_blocks(qtype, np.random.default_rng(1))
    got = read_one(write_gguf(tmp_path / "k.gguf", "llama", {"w": (blocks, qtype)}))
    assert got.shape == (ROWS, COLS)
    np.testing.assert_allclose(got.numpy(), reference_rows(blocks, qtype), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_real_gemma_blocks_match_ggml_reference(gemma_file: GGUFFile) -> None:
    seen = set()
    for info in gemma_file.tensors:
        if info.ggml_type in K_QUANTS and info.ggml_type not in seen:
            seen.add(info.ggml_type)
            got = gemma_file.read(info)[:2]
            raw = np.fromfile(gemma_file.path, np.uint8, info.num_bytes, offset=info.offset)
            rows = raw.reshape(info.shape[0], -1)[:2]
            want = reference_rows(rows, info.ggml_type)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)
    assert seen == {Q.Q4_K, Q.Q6_K}  # the types this file holds


@pytest.fixture(scope="module")
def gemma_file() -> GGUFFile:
    from limelight.engine.loader.packaged import resolve_packaged

    return GGUFFile.open(resolve_packaged("gemma3-270m").path())


# --- header errors ----------------------------------------------------------------------------


def small_file(tmp_path: Path) -> Path:
    weight = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    metadata = {"tokenizer.ggml.tokens": [f"t{i}" for i in range(100)]}
    tensors = {"a": (weight, None), "b": (quantize(weight, Q.Q8_0), Q.Q8_0)}
    return write_gguf(tmp_path / "small.gguf", "llama", tensors, metadata)


def test_every_truncation_is_a_checkpoint_error(tmp_path: Path) -> None:
    data = small_file(tmp_path).read_bytes()
    cut = tmp_path / "cut.gguf"
    for size in sorted({0, 3, 4, 10, 23, 24, 40, 200, 900, len(data) // 2, len(data) - 1}):
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=r"cut\.gguf"):
            GGUFFile.open(cut)


def test_not_gguf_is_a_checkpoint_error(tmp_path: Path) -> None:
    noise = tmp_path / "noise.gguf"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"noise\.gguf: not a valid GGUF file.*starts with"):
        GGUFFile.open(noise)
    with pytest.raises(CheckpointError, match=r"missing\.gguf"):
        GGUFFile.open(tmp_path / "missing.gguf")


def test_corrupt_header_fields(tmp_path: Path) -> None:
    data = bytearray(small_file(tmp_path).read_bytes())
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data[:4]) + (9).to_bytes(4, "little") + bytes(data[8:]))
    with pytest.raises(CheckpointError, match="version 9"):
        GGUFFile.open(bad)
    bad.write_bytes(bytes(data[:24]) + (1 << 40).to_bytes(8, "little") + bytes(data[32:]))
    with pytest.raises(CheckpointError, match=r"bad\.gguf"):  # a key length past the end
        GGUFFile.open(bad)


def test_unknown_tensor_type(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "t.gguf", "llama", {"w": (np.zeros((2, 32), np.int8), Q.I8)})
    with pytest.raises(CheckpointError, match="cannot dequantize tensor 'w' of type I8"):
        read_one(path)


# --- names, layout and config -----------------------------------------------------------------


def llama_cpp_permute(weights: torch.Tensor, num_heads: int) -> torch.Tensor:
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    shape = (num_heads, 2, weights.shape[0] // num_heads // 2, *weights.shape[1:])
    return weights.reshape(shape).swapaxes(1, 2).reshape(weights.shape)


def test_unpermute_inverts_llama_cpp_permute() -> None:
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_rows(llama_cpp_permute(w, 3), 3), w)
    assert not torch.equal(llama_cpp_permute(w, 3), w)


def test_hf_names() -> None:
    assert hf_name("token_embd.weight", "llama") == "model.embed_tokens.weight"
    assert hf_name("output.weight", "llama") == "lm_head.weight"
    assert hf_name("blk.12.attn_q.weight", "llama") == "model.layers.12.self_attn.q_proj.weight"
    assert hf_name("blk.0.attn_q.bias", "qwen2") == "model.layers.0.self_attn.q_proj.bias"
    assert (
        hf_name("blk.1.ffn_norm.weight", "llama")
        == "model.layers.1.post_attention_layernorm.weight"
    )
    assert (
        hf_name("blk.1.ffn_norm.weight", "gemma3")
        == "model.layers.1.pre_feedforward_layernorm.weight"
    )
    assert hf_name("blk.1.post_ffw_norm.weight", "gemma3").endswith(
        "post_feedforward_layernorm.weight"
    )
    assert hf_name("blk.0.strange.weight", "llama") == "blk.0.strange.weight"


GGUF_PARTS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "input_layernorm": "attn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}  # fmt: skip
LLAMA_PARTS = GGUF_PARTS | {"post_attention_layernorm": "ffn_norm"}
GEMMA_PARTS = GGUF_PARTS | {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def gguf_tensors(model: PreTrainedModel, arch: str) -> dict[str, tuple[np.ndarray, None]]:
    """The model's tensors as llama.cpp's converter writes them (F32)."""
    config, parts = model.config, GEMMA_PARTS if arch == "gemma3" else LLAMA_PARTS
    out = {}
    for name, tensor in model.state_dict().items():
        part = ""
        if name == "lm_head.weight":
            continue  # tied
        if name in ("model.embed_tokens.weight", "model.norm.weight"):
            gguf = "token_embd.weight" if "embed" in name else "output_norm.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            part, suffix = rest.rsplit(".", 1)
            gguf = f"blk.{layer}.{parts[part]}.{suffix}"
        if arch == "llama" and part == "self_attn.q_proj":
            tensor = llama_cpp_permute(tensor, config.num_attention_heads)
        if arch == "llama" and part == "self_attn.k_proj":
            tensor = llama_cpp_permute(tensor, config.num_key_value_heads)
        if arch == "gemma3" and gguf.endswith("norm.weight"):
            tensor = tensor + 1
        out[gguf] = (tensor.float().numpy().copy(), None)
    return out


def common_metadata(arch: str, config: Any, rope_theta: float) -> dict[str, Any]:
    return {
        f"{arch}.block_count": config.num_hidden_layers,
        f"{arch}.context_length": config.max_position_embeddings,
        f"{arch}.embedding_length": config.hidden_size,
        f"{arch}.feed_forward_length": config.intermediate_size,
        f"{arch}.attention.head_count": config.num_attention_heads,
        f"{arch}.attention.head_count_kv": config.num_key_value_heads,
        f"{arch}.attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        f"{arch}.rope.freq_base": rope_theta,
        f"{arch}.vocab_size": config.vocab_size,
    }


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config).float().eval()


def tiny_gemma3() -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=8, max_position_embeddings=128, tie_word_embeddings=True,
    )  # fmt: skip
    model = Gemma3ForCausalLM(config).float().eval()
    with torch.no_grad():  # norms start at zero; make them matter
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0, 0.3)
    return model


def check_against_reference(reference: PreTrainedModel, path: Path) -> None:
    file = GGUFFile.open(path)
    config = read_gguf_config(file)
    want = reference.state_dict()
    got = dict(iter_gguf_weights(file, config))
    assert set(got) == set(want) - {"lm_head.weight"}
    for name, tensor in got.items():  # (w + 1) - 1 may round in the last bit
        torch.testing.assert_close(tensor, want[name], rtol=0, atol=1e-6, msg=name)
    model = model_class(config.model_type)(config)
    model.load_weights(got.items())
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 96, n + NUM_DECODE).tolist() for n in (3, 12)]
    ours = paged_logits(model.eval(), sequences, [3, 12])
    with torch.no_grad():
        for seq, logits in zip(sequences, ours, strict=True):
            expected = reference(torch.tensor([seq])).logits[0]
            assert (logits - expected).abs().max().item() < TOLERANCE


def test_llama_layout_config_and_logits(tmp_path: Path) -> None:
    reference = tiny_llama()
    metadata = common_metadata("llama", reference.config, 10000.0)
    path = write_gguf(tmp_path / "l.gguf", "llama", gguf_tensors(reference, "llama"), metadata)
    config = read_gguf_config(GGUFFile.open(path))
    assert (config.model_type, config.head_dim, config.num_key_value_heads) == ("llama", 16, 2)
    assert config.tie_word_embeddings and config.vocab_size == 96
    check_against_reference(reference, path)


def test_gemma3_layout_config_and_logits(tmp_path: Path) -> None:
    reference = tiny_gemma3()
    metadata = common_metadata("gemma3", reference.config, 1e6) | {
        "gemma3.attention.key_length": 16,
        "gemma3.attention.value_length": 16,
        "gemma3.attention.sliding_window": 8,
    }
    path = write_gguf(tmp_path / "g.gguf", "gemma3", gguf_tensors(reference, "gemma3"), metadata)
    config = read_gguf_config(GGUFFile.open(path))
    hf = reference.config
    assert config.model_type == "gemma3_text"
    assert config.raw["layer_types"] == hf.layer_types
    assert config.raw["sliding_window"] == hf.sliding_window
    assert config.raw["query_pre_attn_scalar"] == hf.query_pre_attn_scalar
    assert config.rope == hf.rope_parameters
    check_against_reference(reference, path)


def test_unknown_architecture_reaches_the_registry(tmp_path: Path) -> None:
    metadata = {
        f"mamba9.{key}": value
        for key, value in {"block_count": 2, "embedding_length": 32, "vocab_size": 10}.items()
    }
    metadata["mamba9.attention.head_count"] = 4
    path = write_gguf(
        tmp_path / "m.gguf", "mamba9", {"w": (np.zeros(4, np.float32), None)}, metadata
    )
    config = read_gguf_config(GGUFFile.open(path))
    assert config.model_type == "mamba9"
    with pytest.raises(UnsupportedArchitectureError, match=r"supported architectures: .*llama"):
        model_class(config.model_type)


def test_missing_metadata_is_named(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", "llama", {"w": (np.zeros(4, np.float32), None)})
    with pytest.raises(CheckpointError, match=r"m\.gguf: GGUF metadata lacks llama\.attention"):
        read_gguf_config(GGUFFile.open(path))


def test_llama3_rope_recovered_from_rope_freqs(tmp_path: Path) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    }  # fmt: skip
    hf = LlamaConfig(hidden_size=512, num_attention_heads=8, vocab_size=32, rope_parameters=rope)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    base = 1.0 / 500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    factors = (base / inv_freq.double()).float().numpy()  # what llama.cpp stores
    metadata = common_metadata("llama", hf, 500000.0)
    path = write_gguf(
        tmp_path / "r.gguf", "llama", {"rope_freqs.weight": (factors, None)}, metadata
    )
    file = GGUFFile.open(path)
    config = read_gguf_config(file)
    assert config.rope == rope
    assert list(iter_gguf_weights(file, config)) == []  # folded into the config
    assert math.isclose(config.rope["factor"], 32.0)

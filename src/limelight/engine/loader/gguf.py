"""GGUF files (llama.cpp's format): metadata → `ModelConfig`, tensors → Hugging Face weights.

Tensor types, block sizes and dequantization are the `gguf` package's (llama.cpp's own
Python code).  The header is parsed here rather than with `gguf.GGUFReader`, which builds a
numpy view per array element and needs 20-30 s for Gemma 3's 262k-token vocabulary; this
reader takes each numeric array in one piece and checks every read against the file's end,
so a truncated or corrupt file fails with a `CheckpointError` that says where.

What llama.cpp's converter changed on the way in is undone, so each tensor equals its
Hugging Face original:
- names: `blk.N.attn_q.weight` → `model.layers.N.self_attn.q_proj.weight`, ...;
- `llama` Q/K rows, which the converter interleaves per head for its rotary kernel;
- Gemma norm weights, stored as `1 + w` where Hugging Face stores `w`;
- Llama 3.x rope scaling, stored as a `rope_freqs` tensor rather than as parameters.
The vocabulary in the metadata is `engine/tokenizer.py`'s concern.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize, quant_shape_to_byte_shape
from torch import Tensor

from limelight.engine.errors import CheckpointError
from limelight.engine.models.config import ModelConfig

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_SCALAR_DTYPES: dict[int, np.dtype[Any]] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("?"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}


class _Corrupt(Exception):
    """A header read that cannot succeed; `GGUFFile.open` adds the file name."""


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]  # torch order, outermost first (GGUF lists dimensions reversed)
    offset: int  # absolute byte offset of the data in the file
    num_bytes: int


class _Cursor:
    """Little-endian reads over the mapped file, each checked against its end."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, num_bytes: int) -> memoryview:
        end = self.pos + num_bytes
        if end > len(self.buf):
            raise _Corrupt(f"truncated: a read at byte {self.pos} runs past the end")
        view, self.pos = self.buf[self.pos : end], end
        return view

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def string(self) -> str:
        raw = self.take(self.u64())
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as err:
            raise _Corrupt(f"invalid UTF-8 in a string at byte {self.pos - len(raw)}") from err

    def value(self, kind: int) -> Any:
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            item_kind, count = self.u32(), self.u64()
            if item_kind in (GGUFValueType.STRING, GGUFValueType.ARRAY):
                return [self.value(item_kind) for _ in range(count)]
            dtype = self._dtype(item_kind)
            return np.frombuffer(self.take(dtype.itemsize * count), dtype).tolist()
        dtype = self._dtype(kind)
        return np.frombuffer(self.take(dtype.itemsize), dtype)[0].item()

    def _dtype(self, kind: int) -> np.dtype[Any]:
        if kind not in _SCALAR_DTYPES:
            raise _Corrupt(f"unknown metadata value type {kind} before byte {self.pos}")
        return _SCALAR_DTYPES[kind]


class GGUFFile:
    """An opened GGUF file: its metadata, its tensor table, and its bytes, mapped read-only."""

    def __init__(
        self, path: Path, buffer: mmap.mmap, metadata: dict[str, Any], tensors: list[GGUFTensor]
    ) -> None:
        self.path = path
        self.metadata = metadata
        self.tensors = tensors
        self._buffer = buffer

    @staticmethod
    def open(path: str | Path) -> GGUFFile:
        path = Path(path)
        try:
            with path.open("rb") as f:
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as err:  # ValueError: an empty file cannot be mapped
            raise CheckpointError(f"{path}: cannot read the file as GGUF ({err})") from err
        try:
            metadata, tensors = _read_header(memoryview(buffer))
        except _Corrupt as err:
            raise CheckpointError(f"{path}: not a valid GGUF file: {err}") from err
        if int(metadata.get("split.count", 1)) > 1:
            raise CheckpointError(
                f"{path}: one part of a split GGUF; join the parts first "
                "(llama.cpp's `llama-gguf-split --merge`)"
            )
        return GGUFFile(path, buffer, metadata, tensors)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise CheckpointError(f"{self.path}: GGUF metadata lacks general.architecture")
        return arch

    def tensor(self, name: str) -> GGUFTensor | None:
        return next((t for t in self.tensors if t.name == name), None)

    def read(self, info: GGUFTensor) -> Tensor:
        """The tensor dequantized to float32, as stored (GGUF name and layout)."""
        raw = np.frombuffer(self._buffer, np.uint8, info.num_bytes, info.offset)
        try:
            blocks = raw.reshape(quant_shape_to_byte_shape(info.shape, info.ggml_type))
            values = dequantize(blocks, info.ggml_type)
        except (NotImplementedError, ValueError) as err:
            raise CheckpointError(
                f"{self.path}: cannot dequantize tensor {info.name!r} of type "
                f"{info.ggml_type.name} ({err})"
            ) from err
        if not values.flags.writeable:  # a view of the mapped file (F32): own the memory
            values = values.copy()
        return torch.from_numpy(values.astype(np.float32, copy=False)).reshape(info.shape)


def _read_header(buf: memoryview) -> tuple[dict[str, Any], list[GGUFTensor]]:
    cur = _Cursor(buf)
    magic = bytes(buf[:4])
    if magic != _MAGIC:
        raise _Corrupt(f"it starts with {magic!r}, not {_MAGIC!r}")
    cur.take(4)
    version = cur.u32()
    if version not in _SUPPORTED_VERSIONS:
        raise _Corrupt(f"format version {version} is not supported (only 2 and 3 are)")
    num_tensors, num_fields = cur.u64(), cur.u64()
    metadata: dict[str, Any] = {}
    for _ in range(num_fields):
        key = cur.string()
        metadata[key] = cur.value(cur.u32())
    infos = [_read_tensor_info(cur) for _ in range(num_tensors)]
    alignment = int(metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
    if alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment {alignment} is not a power of two")
    data_start = -(-cur.pos // alignment) * alignment
    tensors = [
        _tensor(name, dims, type_id, data_start + offset) for name, dims, type_id, offset in infos
    ]
    if len({t.name for t in tensors}) != len(tensors):
        raise _Corrupt("two tensors share a name")
    for t in tensors:
        if t.offset + t.num_bytes > len(buf):
            raise _Corrupt(
                f"truncated: tensor {t.name!r} ends at byte {t.offset + t.num_bytes}, "
                f"the file has {len(buf)} bytes"
            )
    return metadata, tensors


def _read_tensor_info(cur: _Cursor) -> tuple[str, list[int], int, int]:
    name = cur.string()
    dims = [cur.u64() for _ in range(cur.u32())]
    return name, dims, cur.u32(), cur.u64()


def _tensor(name: str, dims: list[int], type_id: int, offset: int) -> GGUFTensor:
    try:
        ggml_type = GGMLQuantizationType(type_id)
    except ValueError:
        raise _Corrupt(f"tensor {name!r} has unknown type id {type_id}") from None
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    if not dims or dims[0] % block_size:
        raise _Corrupt(f"tensor {name!r} of shape {dims} does not fit {ggml_type.name} blocks")
    num_bytes = math.prod(dims) // block_size * type_size
    return GGUFTensor(name, ggml_type, tuple(reversed(dims)), offset, num_bytes)


# --- metadata → Hugging Face config.json keys ---------------------------------------------

_MODEL_TYPES = {"gemma3": "gemma3_text"}  # architectures whose HF model_type differs
_GEMMA_ARCHS = ("gemma", "gemma2", "gemma3")  # norms stored as 1 + w
_PERMUTED_QK_ARCHS = ("llama",)  # Q/K rows interleaved for llama.cpp's rotary
_GEMMA3_LOCAL_ROPE_THETA = 10_000.0  # llama.cpp's default when the file does not say


class _Metadata:
    """Reads `{architecture}.{key}`; a missing key without a default is a clear error."""

    def __init__(self, file: GGUFFile) -> None:
        self.file = file
        self.arch = file.architecture

    def __call__(self, key: str, default: Any = ...) -> Any:
        value = self.file.metadata.get(f"{self.arch}.{key}", default)
        if value is ...:
            raise CheckpointError(f"{self.file.path}: GGUF metadata lacks {self.arch}.{key}")
        return value

    def largest(self, key: str, default: Any = ...) -> Any:
        """A count that may be given per layer (heads, FFN width): the largest."""
        value = self(key, default)
        return max(value) if isinstance(value, list) and value else value


def read_gguf_config(file: GGUFFile) -> ModelConfig:
    try:
        return ModelConfig.from_hf(hf_config(file))
    except CheckpointError:
        raise
    except (ValueError, TypeError) as err:  # a value of the wrong kind, or out of range
        raise CheckpointError(f"{file.path}: GGUF metadata gives a bad config ({err})") from err


def hf_config(file: GGUFFile) -> dict[str, Any]:
    """The file's hyper-parameters as a Hugging Face `config.json` dict."""
    get = _Metadata(file)
    heads, hidden = int(get.largest("attention.head_count")), int(get("embedding_length"))
    head_dim = int(get("attention.key_length", hidden // heads))
    embed = file.tensor("token_embd.weight")
    tokens = file.metadata.get("tokenizer.ggml.tokens") or []
    config: dict[str, Any] = {
        "model_type": _MODEL_TYPES.get(get.arch, get.arch),
        "vocab_size": embed.shape[0] if embed else get("vocab_size", len(tokens)),
        "hidden_size": hidden,
        "intermediate_size": get.largest("feed_forward_length", 0),
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": get.largest("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-6),
        "max_position_embeddings": get("context_length", 4096),
        "rope_theta": get("rope.freq_base", 10_000.0),
        "rope_scaling": _rope_scaling(file, get, head_dim),
        "tie_word_embeddings": file.tensor("output.weight") is None,
        "bos_token_id": file.metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": file.metadata.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": file.metadata.get("tokenizer.ggml.padding_token_id"),
    }
    return _gemma3_config(config, get) if get.arch == "gemma3" else config


def _rope_scaling(file: GGUFFile, get: _Metadata, head_dim: int) -> dict[str, Any] | None:
    kind = get("rope.scaling.type", None)
    if kind in ("linear", "yarn"):
        scaling = {"rope_type": kind, "factor": float(get("rope.scaling.factor"))}
        if kind == "yarn":
            scaling["original_max_position_embeddings"] = get(
                "rope.scaling.original_context_length"
            )
        return scaling
    if kind not in (None, "none"):
        raise CheckpointError(f"{file.path}: rope scaling {kind!r} is not supported")
    freqs = file.tensor("rope_freqs.weight")
    if freqs is None:
        return None
    return _llama3_rope(file, file.read(freqs), float(get("rope.freq_base", 10_000.0)), head_dim)


def _llama3_rope(file: GGUFFile, factors: Tensor, theta: float, head_dim: int) -> dict[str, Any]:
    """Recover Llama 3.x rope scaling from the per-frequency factors llama.cpp stores.

    Every Llama 3.1/3.2 checkpoint uses low 1, high 4 and an 8192-token original context
    with its own `factor`; the factors are recomputed from those and must match.
    """
    factor, low, high, context = float(factors.max()), 1.0, 4.0, 8192
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    wavelen = 2 * math.pi / inv_freq
    smooth = (context / wavelen - low) / (high - low)
    expected = torch.where(wavelen < context / high, 1.0, 1.0 / ((1 - smooth) / factor + smooth))
    expected = torch.where(wavelen > context / low, factor, expected)
    if expected.shape != factors.shape or not torch.allclose(expected.float(), factors, rtol=1e-4):
        raise CheckpointError(
            f"{file.path}: its rope_freqs tensor does not match Llama 3 rope scaling; "
            "this kind of rope scaling is not supported"
        )
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": context,
    }


def _gemma3_config(config: dict[str, Any], get: _Metadata) -> dict[str, Any]:
    """Gemma 3 keys the file leaves implicit, as llama.cpp's gemma3 graph assumes them.

    Rope moves to transformers 5's per-layer-type `rope_parameters`; scaling (4B and up)
    applies to the global layers only.
    """
    num_layers, head_dim = config["num_hidden_layers"], config["head_dim"]
    common = {k: v for k, v in config.items() if k not in ("rope_theta", "rope_scaling")}
    global_rope = {"rope_type": "default", **(config["rope_scaling"] or {})}
    global_rope["rope_theta"] = config["rope_theta"]
    is_27b = num_layers == 62  # llama.cpp scales the 27B model's queries by hidden / heads
    local_theta = get("rope.freq_base_swa", _GEMMA3_LOCAL_ROPE_THETA)
    return common | {
        "hidden_activation": "gelu_pytorch_tanh",
        "sliding_window": get("attention.sliding_window", None),
        "layer_types": _gemma3_layer_types(num_layers, get("attention.sliding_window_pattern", 6)),
        "query_pre_attn_scalar": (
            config["hidden_size"] // config["num_attention_heads"] if is_27b else head_dim
        ),
        "rope_parameters": {
            "full_attention": global_rope,
            "sliding_attention": {"rope_type": "default", "rope_theta": local_theta},
        },
        "final_logit_softcapping": get("final_logit_softcapping", None),
        "attn_logit_softcapping": get("attn_logit_softcapping", None),
    }


def _gemma3_layer_types(num_layers: int, pattern: int | list[bool]) -> list[str]:
    """Per layer: a list of flags (True = sliding), or every `pattern`-th layer global."""
    if isinstance(pattern, list):
        return ["sliding_attention" if swa else "full_attention" for swa in pattern]
    is_full = [(i + 1) % max(int(pattern), 1) == 0 for i in range(num_layers)]
    return ["full_attention" if full else "sliding_attention" for full in is_full]


# --- tensors → Hugging Face names and layout -----------------------------------------------

_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 2/3 normalise before and after both halves of the block
_GEMMA_BLOCK = _BLOCK | {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_FOLDED_INTO_CONFIG = ("rope_freqs.weight",)


def hf_name(gguf_name: str, arch: str) -> str:
    """`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`; unknown names pass."""
    base, _, suffix = gguf_name.rpartition(".")
    if base in _TOP_LEVEL:
        return f"{_TOP_LEVEL[base]}.{suffix}"
    match = _BLOCK_NAME.fullmatch(gguf_name)
    parts = _GEMMA_BLOCK if arch in _GEMMA_ARCHS else _BLOCK
    if match and match[2] in parts:
        return f"model.layers.{match[1]}.{parts[match[2]]}.{match[3]}"
    return gguf_name  # the model names it in its "unexpected tensor" error


def iter_gguf_weights(file: GGUFFile, config: ModelConfig) -> Iterator[tuple[str, Tensor]]:
    """(Hugging Face name, float32 tensor) pairs, one tensor in memory at a time."""
    arch = file.architecture
    undo = _layout_fix(arch, config)
    for info in file.tensors:
        if info.name not in _FOLDED_INTO_CONFIG:
            yield hf_name(info.name, arch), undo(info.name, file.read(info))


def _layout_fix(arch: str, config: ModelConfig) -> Callable[[str, Tensor], Tensor]:
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads

    def undo(name: str, tensor: Tensor) -> Tensor:
        if arch in _PERMUTED_QK_ARCHS and ".attn_q." in name:
            return unpermute_rows(tensor, heads)
        if arch in _PERMUTED_QK_ARCHS and ".attn_k." in name:
            return unpermute_rows(tensor, kv_heads)
        if arch in _GEMMA_ARCHS and name.endswith("norm.weight"):
            return tensor - 1.0
        return tensor

    return undo


def unpermute_rows(tensor: Tensor, num_heads: int) -> Tensor:
    """Undo llama.cpp's per-head interleave of Q/K rows (the inverse of its `permute`).

    Each head's rows arrive as (pair, half) and Hugging Face keeps them as (half, pair).
    """
    rows = tensor.shape[0]
    shape = (num_heads, rows // num_heads // 2, 2, *tensor.shape[1:])  # [H, D/2, 2, ...]
    return tensor.reshape(shape).transpose(1, 2).reshape(tensor.shape).contiguous()

"""The contract every architecture implements, and the weight loading they share.

A model maps the step's new token ids `[T]` to hidden states `[T, E]` given a
`ForwardBatch`, and hidden states to logits.  Module names mirror the Hugging Face
checkpoints (`model.layers.0.self_attn.q_proj.weight`), so loading is a name lookup; an
architecture whose checkpoint layout differs from its modules (stacked experts, fused
projections) overrides `load_weight` for those names only.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from limelight.engine.errors import CheckpointError
from limelight.engine.layers.attention import PagedAttention
from limelight.engine.layers.batch import ForwardBatch
from limelight.engine.layers.linear_attention import LinearAttention
from limelight.engine.layers.quantized import QuantSwitch
from limelight.engine.models.config import ModelConfig


class WeightError(CheckpointError):
    """A checkpoint's tensors do not fit the architecture (missing, unexpected, mis-shaped)."""


class CausalLM(nn.Module):
    config: ModelConfig
    quant_switch: QuantSwitch | None = None  # set when the linears are quantized (llm.py)

    def forward(self, input_ids: Tensor, batch: ForwardBatch) -> Tensor:
        raise NotImplementedError

    def compute_logits(self, hidden: Tensor) -> Tensor:
        """[N, E] → [N, V] float32 logits."""
        raise NotImplementedError

    def allocate_caches(
        self, num_kv_slots: int, num_state_slots: int, num_snapshots: int, dtype: torch.dtype
    ) -> None:
        """Give every cache-holding layer its storage (KV slots, linear-attention states)."""
        device = next(self.parameters()).device
        for module in self.modules():
            if isinstance(module, PagedAttention):
                shape = (num_kv_slots, module.num_kv_heads, module.head_dim)
                module.bind_cache(zeros(shape, dtype, device), zeros(shape, dtype, device))
            elif isinstance(module, LinearAttention):
                module.allocate_states(num_state_slots, num_snapshots, device)

    @property
    def has_linear_attention(self) -> bool:
        return any(isinstance(m, LinearAttention) for m in self.modules())

    def load_weight(self, name: str, tensor: Tensor, params: dict[str, nn.Parameter]) -> bool:
        """Load a tensor whose name is not a parameter name; return False if unknown."""
        return False

    def skipped_weight(self, name: str) -> bool:
        """Checkpoint tensors the model recomputes or does not use (rotary tables, ...)."""
        return "rotary_emb.inv_freq" in name or (
            self.config.tie_word_embeddings and name == "lm_head.weight"
        )

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if self.skipped_weight(name):
                continue
            param = params.get(name)
            if param is None:
                if not self.load_weight(name, tensor, params):
                    raise WeightError(f"unexpected tensor {name!r} for {self.config.model_type}")
                loaded.add(name)
                continue
            if param.shape != tensor.shape:
                raise WeightError(
                    f"tensor {name!r} has shape {tuple(tensor.shape)}, "
                    f"the architecture expects {tuple(param.shape)}"
                )
            param.copy_(tensor)
            loaded.add(name)
        missing = [n for n in params if n not in loaded and not self.is_loaded_elsewhere(n, loaded)]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise WeightError(f"checkpoint lacks {len(missing)} tensors: {shown}")

    def is_loaded_elsewhere(self, param_name: str, loaded: set[str]) -> bool:
        """Whether a parameter was filled by `load_weight` under other tensor names."""
        return False


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A zero tensor whose CPU pages become resident only once written.

    `torch.zeros` writes every byte, so a KV cache sized for the worst case would be
    resident from the start; an anonymous memory map is zero by definition and costs
    memory only where the cache is used (how llama.cpp's KV cache behaves too).
    """
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    numel = math.prod(shape)
    size = numel * torch.empty(0, dtype=dtype).element_size()
    buffer = mmap.mmap(-1, max(size, 1))
    return torch.frombuffer(buffer, dtype=dtype, count=numel).view(shape)

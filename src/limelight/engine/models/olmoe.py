"""OLMoE: Mixtral-shaped MoE blocks whose attention normalises the whole Q and K projections.

Unlike qwen3's per-head QK-norm, OLMoE's `q_norm` / `k_norm` are RMSNorms over the full
projection (`[H·D]` and `[Hkv·D]` weights), applied before the split into heads; then
q, k and v are optionally clipped to `±clip_qkv`.  Routing is softmax → top-k,
renormalised only when `norm_topk_prob` (False in OLMoE-1B-7B).  Biases follow
`attention_bias` on all four projections.
"""

from __future__ import annotations

from torch import Tensor, nn

from limelight.engine.layers.batch import ForwardBatch
from limelight.engine.layers.norm import RMSNorm
from limelight.engine.layers.rotary import RotaryEmbedding
from limelight.engine.models.config import ModelConfig
from limelight.engine.models.llama import Attention, DecoderLayer
from limelight.engine.models.mixtral import MixtralForCausalLM, sparse_moe


class OlmoeAttention(Attention):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__(config, rotary)
        h, kv, d = self.shape
        self.q_norm = RMSNorm(h * d, config.rms_norm_eps)
        self.k_norm = RMSNorm(kv * d, config.rms_norm_eps)
        clip = config.get("clip_qkv")
        self.clip_qkv = None if clip is None else float(clip)

    def forward(self, x: Tensor, batch: ForwardBatch) -> Tensor:
        assert self.q_norm is not None and self.k_norm is not None
        h, kv, d = self.shape
        q, k, v = self.project(x)
        q, k = self.q_norm(q), self.k_norm(k)  # over all heads at once: [T, H * D]
        if self.clip_qkv is not None:
            q, k, v = (t.clamp(-self.clip_qkv, self.clip_qkv) for t in (q, k, v))
        q, k = self.rotary(batch.positions, q.view(-1, h, d), k.view(-1, kv, d))
        return self.o_proj(self.attn(q, k, v.view(-1, kv, d), batch))


class OlmoeForCausalLM(MixtralForCausalLM):
    checkpoint_renames = ()

    def make_layer(self, index: int, rotary: RotaryEmbedding) -> nn.Module:
        return DecoderLayer(
            self.config,
            rotary,
            mlp=self.make_mlp(index),
            self_attn=OlmoeAttention(self.config, rotary),
        )

    def make_mlp(self, index: int) -> nn.Module:
        normalize = bool(self.config.get("norm_topk_prob", False))
        return sparse_moe(self.config, routing="softmax_topk", normalize_topk=normalize)

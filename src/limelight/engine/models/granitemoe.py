"""GraniteMoE (granite-3.x-*-a*m, PowerMoE): Mixtral-shaped blocks with Granite's four scales.

  - `embedding_multiplier` scales the token embeddings;
  - `attention_multiplier` is the attention softmax scale (instead of `1/sqrt(D)`);
  - `residual_multiplier` scales each block's attention and MoE outputs before the residual;
  - `logits_scaling` divides the logits.
Routing keeps the top-k router logits, then softmaxes over those k.  Checkpoints store the
experts already stacked: `block_sparse_moe.input_linear.weight` `[E, 2I, H]` (gate rows
first), `output_linear.weight` `[E, H, I]` and the router `router.layer.weight`; they are
renamed onto the shared `SparseMoE` (`mlp.experts.gate_up_proj`, ...).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from limelight.engine.layers.batch import ForwardBatch
from limelight.engine.layers.rotary import RotaryEmbedding
from limelight.engine.models.config import ModelConfig
from limelight.engine.models.llama import DecoderLayer
from limelight.engine.models.mixtral import MixtralForCausalLM, sparse_moe


class GraniteMoeDecoderLayer(DecoderLayer):
    def __init__(
        self,
        config: ModelConfig,
        rotary: RotaryEmbedding,
        mlp: nn.Module,
        residual_multiplier: float,
        **attn_kwargs: Any,
    ) -> None:
        super().__init__(config, rotary, mlp=mlp, **attn_kwargs)
        self.residual_multiplier = residual_multiplier

    def forward(self, x: Tensor, batch: ForwardBatch) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), batch) * self.residual_multiplier
        return x + self.mlp(self.post_attention_layernorm(x)) * self.residual_multiplier


class GraniteMoeForCausalLM(MixtralForCausalLM):
    checkpoint_renames = (
        (".block_sparse_moe.router.layer.", ".mlp.gate."),  # on disk
        (".block_sparse_moe.router.", ".mlp.gate."),  # transformers 5, in memory
        (".block_sparse_moe.input_linear.weight", ".mlp.experts.gate_up_proj"),
        (".block_sparse_moe.output_linear.weight", ".mlp.experts.down_proj"),
        (".block_sparse_moe.", ".mlp."),
    )

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.embedding_multiplier = float(config.get("embedding_multiplier", 1.0))
        self.logits_scaling = float(config.get("logits_scaling", 1.0))

    def make_layer(self, index: int, rotary: RotaryEmbedding) -> nn.Module:
        return GraniteMoeDecoderLayer(
            self.config,
            rotary,
            self.make_mlp(index),
            float(self.config.get("residual_multiplier", 1.0)),
            scale=float(self.config.get("attention_multiplier", 1.0)),
        )

    def make_mlp(self, index: int) -> nn.Module:
        return sparse_moe(self.config, routing="topk_softmax")

    def forward(self, input_ids: Tensor, batch: ForwardBatch) -> Tensor:
        # DecoderModel's loop, with the embeddings scaled first.
        x = self.model.embed_tokens(input_ids) * self.embedding_multiplier  # [T, E]
        for layer in self.model.layers:
            x = layer(x, batch)
        return self.model.norm(x)

    def compute_logits(self, hidden: Tensor) -> Tensor:
        return super().compute_logits(hidden) / self.logits_scaling

"""Tensors for one step: build the batch, run the model, sample.

The model runner owns the model and its cache storage (KV slots and, for hybrid models,
linear-attention states).  It turns the scheduler's decisions into a `ForwardBatch`, runs
the forward pass, computes logits only for the sequences that sample, and hands those to
the sampler.  It makes no scheduling decision and keeps no request state.
"""

from __future__ import annotations

import torch

from limelight.engine.layers.attention import PagedAttention
from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.models import CausalLM
from limelight.engine.sampler import sample
from limelight.engine.scheduler import ScheduledSeq
from limelight.engine.types import EngineConfig, TokenLogprob


def kv_bytes_per_token(model: CausalLM, dtype: torch.dtype) -> int:
    per_token = sum(
        2 * m.num_kv_heads * m.head_dim for m in model.modules() if isinstance(m, PagedAttention)
    )
    return max(per_token, 1) * torch.empty(0, dtype=dtype).element_size()


class ModelRunner:
    def __init__(self, model: CausalLM, config: EngineConfig, num_blocks: int) -> None:
        self.model = model
        self.config = config
        self.device = torch.device(config.device)
        self.cache_dtype = getattr(torch, config.dtype)
        num_snapshots = config.num_state_snapshots if model.has_linear_attention else 0
        model.allocate_caches(
            num_blocks * config.block_size,
            config.max_num_seqs + 1,
            num_snapshots,
            self.cache_dtype,
        )

    @torch.inference_mode()
    def run(self, scheduled: list[ScheduledSeq]) -> tuple[list[int], list[TokenLogprob | None]]:
        """Compute the scheduled tokens; return a token (and logprobs) per sampling sequence."""
        slices, input_ids, last_index, end = [], [], [], 0
        for item in scheduled:
            seq = item.seq
            slices.append(
                SequenceSlice(
                    start=seq.num_computed,
                    num_new=item.num_new,
                    block_table=seq.block_table,
                    state_slot=seq.state_slot,
                    snapshots=item.snapshots,
                    restore_from=seq.restore_from,
                )
            )
            seq.restore_from = None
            input_ids.extend(seq.token_ids[seq.num_computed : seq.num_computed + item.num_new])
            end += item.num_new
            if item.samples:
                last_index.append(end - 1)
        batch = ForwardBatch.build(slices, self.config.block_size, self.device)
        ids = torch.tensor(input_ids, dtype=torch.long, device=self.device)
        hidden = self.model(ids, batch)  # [T, E]
        if not last_index:
            return [], []
        logits = self.model.compute_logits(hidden[torch.tensor(last_index, device=self.device)])
        return sample(logits, [item.seq for item in scheduled if item.samples])

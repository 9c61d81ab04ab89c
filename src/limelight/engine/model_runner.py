"""Tensors for one step: build the batch, run the model, sample.

The model runner owns the model and its cache storage (KV slots and, for hybrid models,
linear-attention states).  It turns the scheduler's decisions into a `ForwardBatch`, runs
the forward pass, computes logits only for the sequences that sample, and hands those to
the sampler.  It makes no scheduling decision and keeps no request state.

Decode and prompt steps go through the compiled forward when `config.compile` asks for it
and the model compiles (`engine/compiled.py`); steps of drafts alone, and every model that
does not compile, run eager.

With speculative decoding a sampling sequence also carries draft tokens: it gets logits at
its pending token and at every draft, for `speculative.sample_and_verify`, and a draft
model (if any) runs on the same batch so that its cache keeps up with the target's.
"""

from __future__ import annotations

import torch

from limelight.engine import kernels, threads
from limelight.engine.compiled import CompiledStep
from limelight.engine.layers.attention import PagedAttention
from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.models import CausalLM
from limelight.engine.scheduler import ScheduledSeq
from limelight.engine.speculative import DraftModelProposer, Logprobs, Tokens, sample_and_verify
from limelight.engine.types import EngineConfig


def kv_bytes_per_token(model: CausalLM, dtype: torch.dtype) -> int:
    per_token = sum(
        2 * m.num_kv_heads * m.head_dim for m in model.modules() if isinstance(m, PagedAttention)
    )
    return max(per_token, 1) * torch.empty(0, dtype=dtype).element_size()


class ModelRunner:
    def __init__(
        self,
        model: CausalLM,
        config: EngineConfig,
        num_blocks: int,
        draft: DraftModelProposer | None = None,
    ) -> None:
        self.model = model
        self.draft = draft
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
        if self.device.type == "cpu" and self.cache_dtype in kernels.DTYPES:
            kernels.paged_decode()  # built now (~15 s the first time), not in the first step
        self.compiled: CompiledStep | None = None
        if config.compile and CompiledStep.supports(model, self.device):
            compiled = CompiledStep(model)
            if compiled.warm_up(config.max_num_seqs, config.block_size):
                self.compiled = compiled

    @torch.inference_mode()
    def run(self, scheduled: list[ScheduledSeq]) -> tuple[Tokens, Logprobs]:
        """Compute the scheduled tokens; return new tokens (and logprobs) per sampling sequence:
        one, or with drafts the accepted ones and one more."""
        slices, input_ids, end = [], [], 0
        sample_index: list[int] = []
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
                    is_prompt=seq.num_computed < seq.num_prompt_tokens,
                )
            )
            seq.restore_from = None
            num_pending = item.num_new - len(item.draft_ids)
            input_ids.extend(seq.token_ids[seq.num_computed : seq.num_computed + num_pending])
            input_ids.extend(item.draft_ids)
            end += item.num_new
            if item.samples:  # the last pending token, then each draft
                sample_index.extend(range(end - 1 - len(item.draft_ids), end))
        batch = ForwardBatch.build(slices, self.config.block_size, self.device)
        if self.model.quant_switch is not None:  # prompt tokens: dense weights (quantized.py)
            self.model.quant_switch.is_on = not batch.prompt_rows
        ids = torch.tensor(input_ids, dtype=torch.long, device=self.device)
        forward = (
            self.compiled
            if self.compiled is not None and self.compiled.takes(batch)
            else self.model
        )
        # one thread fewer while other work holds a core (threads.lend_core)
        with threads.at_most(threads.step_threads(torch.get_num_threads())):
            hidden = forward(ids, batch)  # [T, E]
            if self.draft is not None:
                self.draft.mirror(ids, batch)
            if not sample_index:
                return [], []
            rows = torch.tensor(sample_index, device=self.device)
            logits = self.model.compute_logits(hidden[rows])
            return sample_and_verify(logits, [item for item in scheduled if item.samples])

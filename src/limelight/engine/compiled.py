"""Decode steps through `torch.compile`: `CompiledDecode`.

A decode step is a few hundred small ATen calls (SmolLM2: ~12 per layer besides the
matmuls: norms and their casts, the rotary's multiplies, SwiGLU, residual adds).  On these
two cores each costs microseconds of dispatch, more than its arithmetic: one decode token's
forward spent ~3.5 ms of its ~12 outside any kernel.  Inductor fuses that element-wise work
into a few C++ loops and calls the quantized matmul kernels directly.

Attention goes into the graph too (`PagedAttention.decode_traced`): Inductor fuses the
gather of each sequence's keys and values through its slots into the dot products and the
weighted sum, where eager attention copies them out first, casts them and calls SDPA.  The
shapes that vary are the number of new tokens and the context's length (marked dynamic on
every call, so a longer context never recompiles).  Dynamo compiles one graph for a single
token and one with the token count symbolic per range the quantized layers' row limits
mark out (`QuantizedLinear.max_rows`); `warm_up` compiles them all when the engine is made,
so no request waits on a compile: ~1.5 min the first time, ~15 s once Inductor's on-disk
cache holds the kernels.

Measured on SmolLM2 int4 (this machine's speed wanders by up to 1.5x, so the figures
are medians of steps alternating between the two paths, 8 at a time, in one process):

    sequences x context    compiled    eager     per step
    1 x 66                 18.8 ms     21.2 ms   1.12x
    1 x 1,431              43.8 ms     51.3 ms   1.17x
    4 x 66                 27.7 ms     28.7 ms   1.04x
    4 x 1,431              36.4 ms     39.1 ms   1.07x   (the users share the context)
    16 x 66                58.2 ms     66.5 ms   1.14x

The forward alone, one token at 100 of context, took 8.1-8.4 instead of 11.8-12.1 ms.
Compiling costs ~220-250 MiB of resident memory (Inductor, its graphs and kernels).

Only decode steps (one new token per sequence) take this path; prompt chunks are few,
large and dominated by their matmuls.  Neither do decode steps whose sequences share a
long context prefix (`SharedPrefix`: one character's users): eager attention reads those
keys once for all of them, the compiled graph once per sequence, and the eager step was
the faster (4 users at 1,431 tokens: 56 against 66 ms a step).

Where compiling fails (no C++ compiler, a model that cannot be traced whole) the engine
says why in the log and runs eager.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from limelight.engine.layers.batch import MIN_SHARED_TOKENS, ForwardBatch, SequenceSlice
from limelight.engine.models import CausalLM

logger = logging.getLogger(__name__)

# token counts the warm-up runs: at least one in each range a quantized layer's row limit
# (4 for int8, 12 for int4) opens, up to the engine's batch size
WARM_UP_ROWS = (1, 2, 4, 8, 16, 32, 64)
# Dynamo keeps this many graphs of one function (the models' `forward`) in a process, then
# runs it eager without a word; a model takes up to 5 (sizes x shared or not), and each
# model shape in the process its own
RECOMPILE_LIMIT = 64


class CompiledDecode:
    def __init__(self, model: CausalLM) -> None:
        self.model = model
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
        self._forward = torch.compile(model.forward, fullgraph=True)

    @staticmethod
    def supports(model: CausalLM, device: torch.device) -> bool:
        """CPU models without recurrent state (a linear-attention layer updates it in place)."""
        return device.type == "cpu" and not model.has_linear_attention

    def __call__(self, input_ids: Tensor, batch: ForwardBatch) -> Tensor:
        assert batch.max_query_len == 1, "compiled for decode steps only"
        for tensor, dim in _context_dims(batch):
            torch._dynamo.mark_dynamic(tensor, dim)
        return self._forward(input_ids, batch)

    @torch.inference_mode()
    def warm_up(self, max_rows: int, block_size: int) -> bool:
        """Compile for every decode size up to `max_rows`; False (logged) if it failed.

        Runs before any request, on KV block 0, which holds nothing yet: every size once
        with a short context (two keys: one would be compiled as a constant) and, from two
        sequences up, once with a context they share (the graph that reads it once)."""
        switch = self.model.quant_switch
        if switch is not None:
            switch.is_on = True  # as in every decode step
        try:
            for rows in (n for n in WARM_UP_ROWS if n <= max_rows):
                for start in (1, MIN_SHARED_TOKENS + 1) if rows > 1 else (1,):
                    blocks = [0] * (start // block_size + 1)  # all of them block 0
                    seqs = [SequenceSlice(start, num_new=1, block_table=blocks)] * rows
                    batch = ForwardBatch.build(seqs, block_size)
                    assert (batch.shared is not None) == (start > 1)
                    self(torch.zeros(rows, dtype=torch.long), batch)
        except Exception as err:  # any failure means: run eager
            lines = str(err).strip().splitlines()
            reason = lines[0] if lines else type(err).__name__
            logger.warning("decode steps run eager: torch.compile failed (%s)", reason)
            return False
        return True


def _context_dims(batch: ForwardBatch) -> list[tuple[Tensor, int]]:
    """The dimensions of a decode step's context, and of a shared context's rows: dynamic in
    every graph, so that no length is compiled as a constant (the number of sequences
    elsewhere becomes dynamic at its first change)."""
    dims = [(batch.key_slots, 1), (batch.key_positions, 1)]
    if batch.shared is not None:  # two sequences at least
        shared = batch.shared
        dims += [(shared.rows, 0), (shared.slots, 0), (shared.own_slots, 0)]
        dims += [(shared.own_slots, 1), (shared.own_mask, 0), (shared.own_mask, 3)]
    return dims

"""Decode and prompt steps through `torch.compile`: `CompiledStep`.

A decode step is a few hundred small ATen calls (SmolLM2: ~12 per layer besides the
matmuls: norms and their casts, the rotary's multiplies, SwiGLU, residual adds).  On these
two cores each costs microseconds of dispatch, more than its arithmetic: one decode token's
forward spent ~3.5 ms of its ~12 outside any kernel.  Inductor fuses that element-wise work
into a few C++ loops and calls the quantized matmul kernels directly.

Attention stays as it is, one opaque operator per layer (`limelight::paged_attention`, see
`layers/attention.py`): the graph never sees the KV cache nor the context length, so the
only shape that varies is the number of new tokens.  Dynamo compiles one graph for a single
token and one with the token count symbolic per range the quantized layers' row limits
mark out (`QuantizedLinear.max_rows`), for the engine's threads and for one fewer (while
speech synthesis holds a core: `threads.step_threads`; Dynamo guards on the thread count).
`warm_up` compiles them all when the engine is made, so no request waits on a compile:
199 s the first time for SmolLM2 int4 on an Intel Xeon here (137 s for one thread count
on an AMD EPYC before), 20-30 s once Inductor's on-disk cache holds the kernels.

Measured on SmolLM2 int4, with attention on PyTorch's path (before the CPU kernel of
`engine/kernels`; this machine's speed wanders by up to 1.5x, so the figures are medians
of steps alternating between the two paths, 8 at a time, in one process):

    sequences x context    compiled    eager     per step
    1 x 66                 18.8 ms     21.2 ms   1.12x
    1 x 1,431              43.8 ms     51.3 ms   1.17x
    4 x 66                 27.7 ms     28.7 ms   1.04x
    4 x 1,431              36.4 ms     39.1 ms   1.07x   (the users share the context)
    16 x 66                58.2 ms     66.5 ms   1.14x

The forward alone, one token at 100 of context, took 8.1-8.4 instead of 11.8-12.1 ms.
Compiling costs ~220-250 MiB of resident memory (Inductor, its graphs and kernels).

Steps that compute prompt tokens (a new turn, perhaps beside decoding rows) take this path
too, through graphs of their own: the runner turns the quantized kernels off for them
(`QuantSwitch`), which Dynamo guards on, and their token count is symbolic from two rows
up, so warm-up compiles one graph for a lone prompt token and one for any more.  A new
turn is one short step, where the dispatch counted as much as for decode: a 29-token turn
after a cached 1,000-token character prefix (SmolLM2 int4, `limelight bench engine`'s
shared-prefix case) took 33-36 instead of 47-51 ms.  Every prompt step of an engine goes
one way (compiled where the engine compiles), so a prompt token keeps its bits however
the prompt was cut.  Steps with drafts and no prompt tokens run eager: their rows can pass
the quantized layers' limits, which the warm graphs do not cover.  Where compiling fails
(no C++ compiler, a model that cannot be traced whole) the engine says why in the log and
runs eager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch._dynamo import config as dynamo_config

from limelight.engine import threads
from limelight.engine.layers.attention import compiled_step, number_layers
from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.models import CausalLM

logger = logging.getLogger(__name__)

# Inductor calls the step's kernels from generated C++ instead of Python, the wrapper built
# apart from the kernels (so a cold compile takes no longer: 137 s either way here).  On
# SmolLM2 int4, steps of one row took 6.3-7.1 instead of 9.7-10.0 ms, of 16 rows 19.8-20.2
# instead of 23.4-25.7 (alternating runs, warm caches); the wrapper built together with the
# kernels was in between and took 229 s cold.  Fused loops round to bfloat16 where eager
# rounds (`emulate_precision_casts`): without it a fused loop kept float32 between
# operations, and a compiled greedy reply parted from the eager one at a gap of 0.375 nats
# (tests/engine/test_compiled.py); with it the three test prompts' 16 tokens were the same
# and 47 of 48 logprobs bit for bit, at no step time measurable here.
INDUCTOR_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {
    "cpp_wrapper": True,
    "cpp_wrapper_build_separate": True,
    "emulate_precision_casts": True,
}

RECOMPILE_LIMIT = 64  # graphs Dynamo keeps for one model class's forward

# token counts the warm-up runs: at least one in each range a quantized layer's row limit
# opens (64 with limelight's kernel; 4 for PyTorch's int8, 12 for its int4), up to the
# engine's batch size
WARM_UP_ROWS = (1, 2, 4, 8, 16, 32, 64)
# and of prompt steps: a lone token, and a symbolic count for the rest
PROMPT_WARM_UP_ROWS = (1, 2)


class CompiledStep:
    # Once `warm_up` has compiled a graph for every decode size, a step runs only the guards
    # that tell those graphs apart (the number of rows): Dynamo's whole set, over every
    # module and weight the forward reads, took ~0.9 ms of a ~10 ms SmolLM2 step, and the
    # rest ~0.45.  Safe as long as no step would recompile; the tests run with the whole
    # set and "fail_on_recompile" instead, which proves that.
    AFTER_WARM_UP: ClassVar[dict[str, Any]] = {"skip_guard_eval_unsafe": True}

    def __init__(self, model: CausalLM) -> None:
        # Dynamo keeps a model class's graphs on its `forward`, shared by every instance:
        # one engine warms up a graph per row range and thread count (up to ~8 for SmolLM2
        # int4), so a second engine in the process (tests, a draft model) would pass the
        # default limit of 8 and decode eager.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        self.model = model
        self.layers = number_layers(model)
        self._forward = torch.compile(model.forward, fullgraph=True, options=INDUCTOR_OPTIONS)
        self.warm = False

    @staticmethod
    def supports(model: CausalLM, device: torch.device) -> bool:
        """CPU models without recurrent state (a linear-attention layer updates it in place)."""
        return device.type == "cpu" and not model.has_linear_attention

    @staticmethod
    def takes(batch: ForwardBatch) -> bool:
        """Decode steps and steps with prompt tokens (see the module docstring)."""
        return batch.is_decode or bool(batch.prompt_rows)

    def __call__(self, input_ids: Tensor, batch: ForwardBatch) -> Tensor:
        assert self.takes(batch), "compiled for decode and prompt steps only"
        stance = self.AFTER_WARM_UP if self.warm else {}
        with compiled_step(self.layers, batch), torch.compiler.set_stance(**stance):
            return self._forward(input_ids, batch)

    @torch.inference_mode()
    def warm_up(self, max_rows: int, block_size: int) -> bool:
        """Compile for every decode size up to `max_rows` and for prompt steps, on the
        engine's threads and on one fewer (while speech synthesis holds a core:
        `threads.lend_core`); False (logged) if it failed.

        Runs before any request: it writes keys to the first slots, which hold nothing yet."""
        switch = self.model.quant_switch
        total = torch.get_num_threads()
        try:
            for num_threads in threads.step_thread_counts(total):
                with threads.at_most(num_threads):  # a graph for each (Dynamo guards on it)
                    for rows in (n for n in WARM_UP_ROWS if n <= max_rows):
                        self._warm(rows, False, block_size)
                    for rows in PROMPT_WARM_UP_ROWS:
                        self._warm(rows, True, block_size)
        except Exception as err:  # any failure means: run eager
            lines = str(err).strip().splitlines()
            reason = lines[0] if lines else type(err).__name__
            logger.warning("steps run eager: torch.compile failed (%s)", reason)
            return False
        finally:
            if switch is not None:
                switch.is_on = True
        self.warm = True
        return True

    def _warm(self, rows: int, prompt: bool, block_size: int) -> None:
        """One step of `rows` decoding sequences, or of one prompt of `rows` tokens, as the
        runner would run it (the quantized kernels off for a prompt)."""
        if prompt:
            table = list(range(-(-rows // block_size)))
            seqs = [SequenceSlice(start=0, num_new=rows, block_table=table, is_prompt=True)]
        else:
            seqs = [SequenceSlice(start=0, num_new=1, block_table=[0])] * rows
        if self.model.quant_switch is not None:
            self.model.quant_switch.is_on = not prompt
        self(torch.zeros(rows, dtype=torch.long), ForwardBatch.build(seqs, block_size))

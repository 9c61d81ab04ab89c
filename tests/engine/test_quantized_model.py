"""The packaged SmolLM2 with int8 weights decodes like its bfloat16 self."""

from __future__ import annotations

import pytest

from limelight import LLM, SamplingParams
from limelight.engine.layers.quantized import Int8Linear

pytestmark = pytest.mark.slow
PROMPTS = ["The history of the lighthouse", "My favourite recipe for soup", "In the year 2050,"]


def greedy(llm: LLM, prompt: str) -> tuple[list[int], list[float]]:
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=1)
    out = llm.generate(prompt, params)[0]  # one at a time: decode steps of one row
    return out.token_ids, [lp.logprob for lp in out.logprobs]


def test_int8_weights_pick_the_same_tokens_as_bfloat16() -> None:
    dense = LLM("smollm2-135m-instruct", dtype="bfloat16", kv_cache_bytes=32 << 20)
    int8 = LLM(
        "smollm2-135m-instruct", dtype="bfloat16", quantization="int8", kv_cache_bytes=32 << 20
    )
    assert sum(isinstance(m, Int8Linear) for m in int8.engine.runner.model.modules()) > 100
    same, logprobs_differ = 0, False
    for prompt in PROMPTS:
        (ids_a, lp_a), (ids_b, lp_b) = greedy(dense, prompt), greedy(int8, prompt)
        same += ids_a == ids_b
        logprobs_differ |= lp_a != lp_b
    assert same >= 2  # a near-tie may flip one continuation, not most
    assert logprobs_differ  # the int8 weights were used

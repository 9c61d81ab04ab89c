"""The packaged SmolLM2 with int8 weights decodes like its bfloat16 self."""

from __future__ import annotations

import pytest

from limelight import LLM, SamplingParams
from limelight.engine.layers.quantized import Int8Linear
from limelight.engine.types import TokenLogprob

pytestmark = pytest.mark.slow
PROMPTS = ["The history of the lighthouse", "My favourite recipe for soup", "In the year 2050,"]


NEAR_TIE = 0.25  # nats: two bfloat16 steps of a logit near 20 (its resolution is 0.125)


def greedy(llm: LLM, prompt: str) -> tuple[list[int], list[TokenLogprob]]:
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=2)
    out = llm.generate(prompt, params)[0]  # one at a time: decode steps of one row
    return out.token_ids, out.logprobs


def test_int8_weights_pick_the_same_tokens_as_bfloat16() -> None:
    """Greedy continuations agree token for token until, at most, a near-tie: a place where
    bfloat16's own top two tokens are within NEAR_TIE of each other and int8 took the
    other one.  (Which side of a tie wins is noise: after it the texts go their own way.)"""
    dense = LLM("smollm2-135m-instruct", dtype="bfloat16", kv_cache_bytes=32 << 20)
    int8 = LLM(
        "smollm2-135m-instruct", dtype="bfloat16", quantization="int8", kv_cache_bytes=32 << 20
    )
    assert sum(isinstance(m, Int8Linear) for m in int8.engine.runner.model.modules()) > 100
    same, logprobs_differ = 0, False
    for prompt in PROMPTS:
        (ids_a, lp_a), (ids_b, lp_b) = greedy(dense, prompt), greedy(int8, prompt)
        logprobs_differ |= [x.logprob for x in lp_a] != [x.logprob for x in lp_b]
        if ids_a == ids_b:
            same += 1
            continue
        first = next(i for i, (a, b) in enumerate(zip(ids_a, ids_b, strict=True)) if a != b)
        top = dict(lp_a[first].top)  # bfloat16's two best tokens there
        assert ids_b[first] in top, f"{prompt!r}: int8 left bfloat16's top two at {first}"
        gap = top[ids_a[first]] - top[ids_b[first]]
        assert gap <= NEAR_TIE, f"{prompt!r}: not a near-tie at token {first} ({gap:.3f})"
    assert same >= 1
    assert logprobs_differ  # the int8 weights were used


def test_a_cached_prompt_gives_the_same_greedy_reply() -> None:
    """The second run takes all but one prompt token from the prefix cache; that token still
    goes through the dense weights (not the int8 kernel a one-row step would use)."""
    llm = LLM(
        "smollm2-135m-instruct", dtype="bfloat16", quantization="int8", kv_cache_bytes=32 << 20
    )
    prompt = llm.apply_chat_template([{"role": "user", "content": "Say hello."}])
    assert len(llm.tokenizer.encode(prompt)) % llm.engine.config.block_size == 1
    params = SamplingParams(temperature=0, max_tokens=12)
    first, second = (llm.generate(prompt, params)[0] for _ in range(2))
    assert second.num_cached_tokens > 0
    assert second.token_ids == first.token_ids

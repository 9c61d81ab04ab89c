"""The packaged SmolLM2 with int8 or int4 weights decodes like the checkpoint itself."""

from __future__ import annotations

import pytest

from limelight import LLM, SamplingParams
from limelight.engine.layers.quantized import Int4Linear, Int8Linear
from limelight.engine.types import TokenLogprob

pytestmark = pytest.mark.slow
PROMPTS = ["The history of the lighthouse", "My favourite recipe for soup", "In the year 2050,"]


NEAR_TIE = 0.25  # nats: two bfloat16 steps of a logit near 20 (its resolution is 0.125)


def greedy(llm: LLM, prompt: str) -> tuple[list[int], list[TokenLogprob]]:
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=5)
    out = llm.generate(prompt, params)[0]  # one at a time: decode steps of one row
    return out.token_ids, out.logprobs


def agrees_until_a_near_tie(
    prompt: str, reference: tuple[list[int], list[TokenLogprob]], candidate: list[int]
) -> bool:
    """Whether two greedy continuations (`greedy`) are the same; where they part, asserts
    that the candidate took another of the reference's top tokens within NEAR_TIE of its
    own.  (Which side of a tie wins is noise: after it the texts go their own way.)"""
    ids, logprobs = reference
    if ids == candidate:
        return True
    first = next(i for i, (a, b) in enumerate(zip(ids, candidate, strict=True)) if a != b)
    top = dict(logprobs[first].top)  # the reference's five best tokens there
    assert candidate[first] in top, f"{prompt!r}: left the reference's top five at {first}"
    gap = top[ids[first]] - top[candidate[first]]
    assert gap <= NEAR_TIE, f"{prompt!r}: not a near-tie at token {first} ({gap:.3f})"
    return False


@pytest.fixture(scope="module")
def reference() -> LLM:
    """float32: the GGUF's weights exactly as stored (dequantized)."""
    return LLM("smollm2-135m-instruct", kv_cache_bytes=32 << 20)


@pytest.mark.parametrize(("quantization", "kind"), [("int8", Int8Linear), ("int4", Int4Linear)])
def test_quantized_weights_pick_the_checkpoints_tokens(
    reference: LLM, quantization: str, kind: type
) -> None:
    """Greedy continuations agree token for token until, at most, a near-tie: a place where
    the checkpoint's own top tokens are within NEAR_TIE of each other and the quantized
    model took another of them.  Measured: the divergences are at gaps of 0.088 and 0.072
    nats (int8) and 0.242 and 0.072 (int4, whose 4-bit layers hold the Q4_1 levels more
    closely than int8: weight error 0.0022 vs 0.0081 of the checkpoint's norm; both share
    the int8 head); bfloat16 itself diverges at 0.017 and 0.011."""
    quantized = LLM(
        "smollm2-135m-instruct",
        dtype="bfloat16",
        quantization=quantization,
        kv_cache_bytes=32 << 20,
    )
    assert sum(isinstance(m, kind) for m in quantized.engine.runner.model.modules()) >= 120
    same, logprobs_differ = 0, False
    for prompt in PROMPTS:
        (ids_a, lp_a), (ids_b, lp_b) = greedy(reference, prompt), greedy(quantized, prompt)
        logprobs_differ |= [x.logprob for x in lp_a] != [x.logprob for x in lp_b]
        same += agrees_until_a_near_tie(prompt, (ids_a, lp_a), ids_b)
    assert same >= 1
    assert logprobs_differ  # the quantized weights were used


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_a_cached_prompt_gives_the_same_greedy_reply(quantization: str) -> None:
    """The second run takes all but one prompt token from the prefix cache; that token still
    goes through the dense weights (not the quantized kernel a one-row step would use).

    The two runs' states are not bit for bit the same (the first attends in one prompt
    chunk, the second through the decode kernel, each rounding bfloat16 its own way: the
    first token's logprob moved by 0.02-0.05 here), so the replies agree until a near-tie,
    as a quantized reply agrees with the checkpoint's."""
    llm = LLM(
        "smollm2-135m-instruct",
        dtype="bfloat16",
        quantization=quantization,
        kv_cache_bytes=32 << 20,
    )
    prompt = llm.apply_chat_template([{"role": "user", "content": "Say hello."}])
    assert len(llm.tokenizer.encode(prompt)) % llm.engine.config.block_size == 1
    params = SamplingParams(temperature=0, max_tokens=12, logprobs=5)
    first, second = (llm.generate(prompt, params)[0] for _ in range(2))
    assert second.num_cached_tokens > 0
    agrees_until_a_near_tie(prompt, (first.token_ids, first.logprobs), second.token_ids)

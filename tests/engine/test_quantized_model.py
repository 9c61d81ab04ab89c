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
    goes through the dense weights (not the quantized kernel a one-row step would use) and
    through the prompt's attention (not the decode kernel), so its states are the same bits
    as in the first run's one chunk of 33 tokens, and so is the whole reply."""
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
    assert second.num_cached_tokens == len(llm.tokenizer.encode(prompt)) - 1
    assert second.token_ids == first.token_ids
    assert [x.top for x in second.logprobs] == [x.top for x in first.logprobs]


STORY = (
    "The lighthouse keeper had lived on the island for thirty years. Every night he climbed "
    "the spiral stairs, trimmed the wick and watched the ships pass. "
) * 12


@pytest.mark.parametrize(
    ("quantization", "chunk", "compile"),
    [(None, 64, False), ("int4", 64, False), ("int4", 512, False), ("int4", 64, True)],
    ids=str,
)
def test_a_prompt_gets_the_same_bits_however_it_was_cut(
    quantization: str | None, chunk: int, compile: bool
) -> None:
    """A 370-token prompt computed whole (in chunks of `chunk` tokens), or after a third or
    two thirds of it came from the prefix cache (chunks cut elsewhere, with another
    sequence beside it): the same logprobs, bit for bit, for a reply of 16 tokens, eager
    and compiled (as the server runs).  This is what makes a regenerated greedy reply the
    same reply."""
    question = STORY + "\nQuestion: what did the keeper do every night? Answer:"
    params = SamplingParams(temperature=0, max_tokens=16, logprobs=2, ignore_eos=True)

    def reply(cached: list[str]) -> tuple[int, list[list[tuple[int, float]]]]:
        llm = LLM(
            "smollm2-135m-instruct",
            dtype="bfloat16",
            quantization=quantization,
            kv_cache_bytes=64 << 20,
            max_num_batched_tokens=chunk,
            compile=compile,
        )
        if compile:
            assert llm.engine.runner.compiled is not None
        for text in cached:
            llm.generate(text, SamplingParams(temperature=0, max_tokens=1))
        if len(cached) > 1:  # the question beside another prompt in the same steps
            out = llm.generate([question, cached[-1] + " and more"], params)[0]
        else:
            out = llm.generate(question, params)[0]
        return out.num_cached_tokens, [x.top for x in out.logprobs]

    whole = reply([])
    third = reply([STORY[: len(STORY) // 3]])
    two_thirds = reply([STORY[: 2 * len(STORY) // 3], "Unrelated words"])
    assert whole[0] == 0 and 0 < third[0] < two_thirds[0]
    assert third[1] == whole[1]
    assert two_thirds[1] == whole[1]

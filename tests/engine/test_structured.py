"""Grammar-constrained decoding: constraints, the compiler, the logit mask, the engine.

The fast tests run a tiny random model with a tiny byte-level BPE tokenizer (llguidance
needs a `tokenizers` one, so the byte fake will not do); the mask is checked against a
brute-force reference over the vocabulary.  The slow test runs 100 generations of the
packaged SmolLM2 under a nested JSON schema and validates every output with `jsonschema`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import torch
from bench.structured import SCHEMA, character_prompts
from torch import Tensor

from limelight import LLM
from limelight.engine.errors import RequestError
from limelight.engine.llm_engine import LLMEngine
from limelight.engine.structured import (
    GrammarCompiler,
    mask_logits,
    unpack_forbidden_numpy,
    unpack_forbidden_torch,
)
from limelight.engine.tokenizer import Tokenizer
from limelight.engine.types import Constraint, EngineConfig, SamplingParams
from tests.engine.fakes import ByteTokenizer, tiny_config, tiny_model
from tests.engine.test_tokenizer import save_tiny_tokenizer

MODEL_VOCAB = 416  # wider than the tokenizer's 400, as real checkpoints often are
YES_NO = Constraint.regex("(yes|no)")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    folder: Path = tmp_path_factory.mktemp("tokenizer")
    save_tiny_tokenizer(folder)
    return Tokenizer.from_hf_folder(folder)


@pytest.fixture
def compiler(tokenizer: Tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, MODEL_VOCAB)


def make_engine(tokenizer: Tokenizer, **options: object) -> LLMEngine:
    model = tiny_model(tiny_config(vocab_size=MODEL_VOCAB))
    return LLMEngine(model, tokenizer, EngineConfig(**options))  # type: ignore[arg-type]


def run_all(
    engine: LLMEngine, prompts: list[str], params: list[SamplingParams]
) -> list[tuple[str, str]]:
    """(text, finish reason) per prompt."""
    ids = [engine.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
    while engine.has_unfinished:
        engine.step()
    outputs = [engine.pop_output(i) for i in ids]
    return [(o.text, o.finish_reason) for o in outputs]


# --- Constraint ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("xml", "x", "unknown constraint kind"),
        ("json_object", "{}", "takes no value"),
        ("json_schema", "[1, 2]", "needs a JSON object"),
        ("json_schema", "{not json", "not valid JSON"),
        ("regex", "", "non-empty string"),
        ("grammar", None, "non-empty string"),
    ],
)
def test_constraint_rejects_bad_values(kind: str, value: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        Constraint(kind, value)  # type: ignore[arg-type]


def test_sampling_params_take_only_a_constraint() -> None:
    assert SamplingParams(constraint=Constraint.json_object()).constraint == Constraint(
        "json_object"
    )
    with pytest.raises(RequestError, match="constraint must be a Constraint"):
        SamplingParams(constraint="[0-9]+")  # type: ignore[arg-type]


# --- GrammarCompiler ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        (Constraint.json_schema({"type": "objectx"}), "(?s)json_schema .*objectx"),
        (Constraint.json_schema({"type": "string", "pattern": "a(b"}), "json_schema"),
        (Constraint.regex("a(b"), "(?s)regex .*unclosed group"),
        (Constraint.grammar("start: missing_rule"), "(?s)grammar .*missing_rule"),
    ],
)
def test_a_constraint_that_does_not_compile_is_a_request_error(
    compiler: GrammarCompiler, constraint: Constraint, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        compiler.matcher(constraint)


def test_the_same_schema_compiles_once(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    a = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    b = {"required": ["x"], "properties": {"x": {"type": "integer"}}, "type": "object"}
    first = compiler.matcher(Constraint.json_schema(a))
    second = compiler.matcher(Constraint.json_schema(json.dumps(b)))
    assert len(compiler._cache) == 1
    for token in tokenizer.encode('{"x": 12}', add_special_tokens=False):
        first.advance(token)
    assert first.is_done and not first.error
    assert not second.is_done  # each sequence has its own state


def test_a_tokenizer_without_a_tokenizers_backend_is_refused() -> None:
    compiler = GrammarCompiler(ByteTokenizer(), 260)
    with pytest.raises(RequestError, match="`tokenizers` library"):
        compiler.matcher(YES_NO)


# --- the mask ---------------------------------------------------------------------------------


def allowed_reference(tokenizer: Tokenizer, words: list[str], done: str) -> set[int]:
    """Token ids whose text continues `done` towards one of `words` (brute force)."""
    allowed = set()
    for token_id in range(tokenizer.vocab_size):
        if tokenizer.id_to_token(token_id) in ("<unk>", "<s>", "</s>", "<|im_end|>"):
            continue
        text = done + tokenizer.decode([token_id], skip_special_tokens=False)
        if any(w.startswith(text) and len(text) > len(done) for w in words):
            allowed.add(token_id)
    return allowed


def test_mask_matches_a_brute_force_reference(
    compiler: GrammarCompiler, tokenizer: Tokenizer
) -> None:
    matcher = compiler.matcher(YES_NO)
    logits = torch.randn(3, MODEL_VOCAB)
    masked = mask_logits(logits, [None, matcher, None])
    assert torch.equal(masked[[0, 2]], logits[[0, 2]])  # unconstrained rows untouched
    allowed = set(torch.isfinite(masked[1]).nonzero().flatten().tolist())
    assert allowed == allowed_reference(tokenizer, ["yes", "no"], "")
    matcher.advance(tokenizer.encode("y", add_special_tokens=False)[0])
    allowed = set(
        torch.isfinite(mask_logits(logits[:1], [matcher])[0]).nonzero().flatten().tolist()
    )
    assert allowed == allowed_reference(tokenizer, ["yes"], "y")


def test_only_eos_may_follow_a_complete_grammar(
    compiler: GrammarCompiler, tokenizer: Tokenizer
) -> None:
    matcher = compiler.matcher(Constraint.regex("no"))
    for token in tokenizer.encode("no", add_special_tokens=False):
        assert not matcher.is_done
        matcher.advance(token)
    assert matcher.is_done and not matcher.error
    masked = mask_logits(torch.zeros(1, MODEL_VOCAB), [matcher])
    assert torch.isfinite(masked[0]).nonzero().flatten().tolist() == tokenizer.eos_token_ids


def test_a_rejected_token_sets_the_error(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    matcher = compiler.matcher(YES_NO)
    matcher.advance(tokenizer.encode("x", add_special_tokens=False)[0])
    assert matcher.is_done and "doesn't satisfy the grammar" in matcher.error


@pytest.mark.parametrize("unpack", [unpack_forbidden_numpy, unpack_forbidden_torch])
def test_bitmasks_unpack_in_token_order(unpack: Callable[[Tensor, int], Tensor]) -> None:
    bitmask = torch.randint(-(2**31), 2**31 - 1, (3, 5), dtype=torch.int32)
    reference = [
        [(int(bitmask[r, t // 32]) >> (t % 32)) & 1 == 0 for t in range(150)] for r in range(3)
    ]
    assert unpack(bitmask, 150).tolist() == reference


# --- the engine -------------------------------------------------------------------------------


def test_constrained_rows_match_and_unconstrained_rows_are_untouched(
    tokenizer: Tokenizer,
) -> None:
    pattern = r"[a-z]{2,6}( [a-z]{2,6}){0,3}\."
    prompts = ["Hello world", "json {", "def f(x):", "Numbers 1234"]
    constrained = [
        SamplingParams(temperature=0, max_tokens=40, constraint=Constraint.regex(pattern)),
        SamplingParams(temperature=1.0, seed=3, max_tokens=40, constraint=YES_NO),
        SamplingParams(
            temperature=0.8, seed=4, max_tokens=40, constraint=Constraint.regex(pattern)
        ),
    ]
    free = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    outputs = run_all(make_engine(tokenizer), prompts, [*constrained, free])
    for (text, reason), params in zip(outputs[:3], constrained, strict=True):
        assert params.constraint is not None and isinstance(params.constraint.value, str)
        assert reason == "stop" and re.fullmatch(params.constraint.value, text), text
    assert outputs[3] == run_all(make_engine(tokenizer), prompts[3:], [free])[0]


def test_a_lark_grammar_constrains_the_output(tokenizer: Tokenizer) -> None:
    grammar = Constraint.grammar('start: "The answer is " ANSWER "."\nANSWER: "yes" | "no"')
    params = [SamplingParams(temperature=1.0, seed=s, constraint=grammar) for s in range(4)]
    outputs = run_all(make_engine(tokenizer), ["Hello world"] * 4, params)
    assert {reason for _, reason in outputs} == {"stop"}
    assert {text for text, _ in outputs} <= {"The answer is yes.", "The answer is no."}


def test_a_grammar_complete_at_max_tokens_is_a_stop(tokenizer: Tokenizer) -> None:
    params = SamplingParams(
        temperature=1.0, seed=0, max_tokens=2, constraint=Constraint.regex("no")
    )
    outputs = run_all(make_engine(tokenizer), ["Hello world"] * 3, [params] * 3)
    assert outputs == [("no", "stop")] * 3  # "no" is one or two tokens: never "length"


def test_logprobs_stay_those_of_the_model(tokenizer: Tokenizer) -> None:
    constrained = SamplingParams(temperature=0, logprobs=3, max_tokens=1, constraint=YES_NO)
    free = SamplingParams(temperature=0, logprobs=3, max_tokens=1)
    engine = make_engine(tokenizer)
    ids = [engine.add_request("Hello world", p) for p in (constrained, free)]
    while engine.has_unfinished:
        engine.step()
    first, second = (engine.pop_output(i).logprobs[0] for i in ids)
    assert [t for t, _ in first.top] == [t for t, _ in second.top]  # the raw distribution ...
    assert [lp for _, lp in first.top] == pytest.approx([lp for _, lp in second.top], abs=1e-4)
    assert first.token_id != second.token_id  # ... though the grammar chose another token


def test_a_bad_constraint_fails_at_add_request_and_queues_nothing(tokenizer: Tokenizer) -> None:
    engine = make_engine(tokenizer)
    with pytest.raises(RequestError, match="unclosed group"):
        engine.add_request("Hello", SamplingParams(constraint=Constraint.regex("a(b")))
    assert not engine.requests and not engine.has_unfinished


def test_preemption_keeps_the_matcher_in_step(tokenizer: Tokenizer) -> None:
    """A preempted sequence keeps its output tokens and recomputes only their KV, so its
    matcher, which has consumed exactly those tokens, needs no rollback."""
    pattern = r"[a-z]{30}\."
    constraint = Constraint.regex(pattern)
    params = [SamplingParams(temperature=0, max_tokens=40, constraint=constraint)] * 4
    prompts = ["Hello world", "json {", "def f(x):", "Numbers 1234"]
    small = make_engine(tokenizer, num_kv_blocks=8, block_size=4)  # 32 slots for ~80 tokens
    outputs = run_all(small, prompts, params)
    assert small.stats.num_preemptions > 0
    assert outputs == run_all(make_engine(tokenizer), prompts, params)
    assert all(reason == "stop" and re.fullmatch(pattern, text) for text, reason in outputs)


@pytest.mark.slow
def test_100_character_sheets_parse_and_validate() -> None:
    """The acceptance check: a nested schema (objects, arrays, enums, required fields),
    greedy and seeded sampling mixed in one batch, every output valid."""
    llm = LLM("smollm2-135m-instruct")
    constraint = Constraint.json_schema(SCHEMA)
    params = [
        SamplingParams(temperature=0.8, seed=i, max_tokens=192, constraint=constraint)
        if i % 2
        else SamplingParams(temperature=0, max_tokens=192, constraint=constraint)
        for i in range(100)
    ]
    outputs = llm.generate(character_prompts(llm, 100), params)
    for output in outputs:
        assert output.finish_reason == "stop", output.text
        jsonschema.validate(json.loads(output.text), SCHEMA)
    assert len({o.text for o in outputs}) > 50  # sampled, and prompts that differ

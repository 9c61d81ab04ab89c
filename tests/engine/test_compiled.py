"""Decode and prompt steps through torch.compile give the eager engine's outputs
(engine/compiled.py)."""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch

from limelight import LLM, SamplingParams
from limelight.engine import threads
from limelight.engine.compiled import CompiledStep
from limelight.engine.layers.attention import PagedAttention
from limelight.engine.llm_engine import LLMEngine
from tests.engine.fakes import tiny_config, tiny_engine, tiny_model
from tests.engine.test_quantized_model import PROMPTS, agrees_until_a_near_tie, greedy

pytestmark = pytest.mark.slow  # every compiling engine takes seconds (the packaged one ~30 s)


@pytest.fixture(autouse=True)
def no_recompiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """After warm-up, every guard runs and a step that would compile again fails: what
    lets the engine run only the guards that tell the warm graphs apart."""
    monkeypatch.setattr(CompiledStep, "AFTER_WARM_UP", {"stance": "fail_on_recompile"})


def run_all(engine: LLMEngine, requests: list[tuple[list[int], SamplingParams]]) -> list[Any]:
    ids = [engine.add_request(prompt, params) for prompt, params in requests]
    while engine.has_unfinished:
        engine.step()
    return [engine.pop_output(i).token_ids for i in ids]


@pytest.fixture
def operator_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times attention ran as the compiled graph's operator: a step dynamo gave up
    on would run its layers' attention directly, from eager `PagedAttention.forward`."""
    calls = [0]
    attend = PagedAttention.attend

    def counted(self: PagedAttention, *args: Any) -> torch.Tensor:
        caller = sys._getframe(1).f_code.co_qualname
        calls[0] += caller == "_OpaqueAttention.attend"
        return attend(self, *args)

    monkeypatch.setattr(PagedAttention, "attend", counted)
    return calls


def test_compiled_decode_gives_the_same_outputs(operator_calls: list[int]) -> None:
    """14 sequences finishing at different lengths make decode steps of 14 rows down to 1
    (the one-token graph and the symbolic one: a float32 model has no row limits); 4 of
    them share a 320-token prefix (the shared-keys attention, inside the operator)."""
    rng = random.Random(0)
    shared = [rng.randrange(4, 260) for _ in range(320)]
    prompts = [shared + [rng.randrange(4, 260) for _ in range(5 + i)] for i in range(4)]
    prompts += [[rng.randrange(4, 260) for _ in range(3 + 7 * i)] for i in range(10)]
    options = {"max_num_seqs": 16, "num_kv_blocks": 128}
    for params in (
        SamplingParams(temperature=0, ignore_eos=True),
        SamplingParams(temperature=0.9, top_k=20, seed=7, ignore_eos=True),
    ):
        requests = [(p, replace(params, max_tokens=8 + 2 * i)) for i, p in enumerate(prompts)]
        engine = tiny_engine(tiny_model(), compile=True, **options)
        assert engine.runner.compiled is not None
        operator_calls[0] = 0
        outputs = run_all(engine, requests)
        assert operator_calls[0] >= 2 * 13 * 2  # 2 layers, the decode steps after the prompts
        assert outputs == run_all(tiny_engine(tiny_model(), **options), requests)


def test_steps_with_a_core_lent_run_warm_graphs_on_one_thread_fewer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While speech synthesis holds a core (`threads.lend_core`) decode steps compute on
    one thread fewer, through graphs that warm-up compiled for it: no step compiles again
    (the autouse fixture fails one that would), and the tokens are the same."""
    requests = [([5 + i, 9, 17 + i], SamplingParams(temperature=0, max_tokens=6)) for i in range(3)]
    used: list[int] = []
    forward = CompiledStep.__call__

    def counted(self: CompiledStep, *args: Any) -> torch.Tensor:
        used.append(torch.get_num_threads())
        return forward(self, *args)

    monkeypatch.setattr(CompiledStep, "__call__", counted)
    with threads.at_most(2):
        engine = tiny_engine(tiny_model(), compile=True)
        assert engine.runner.compiled is not None
        expected = run_all(engine, requests)
        with threads.lend_core():
            assert run_all(engine, requests) == expected
    assert set(used) == ({1, 2} if torch.get_num_threads() >= 2 else {1})


def test_compiled_sliding_window_attention_gives_the_same_outputs(
    operator_calls: list[int],
) -> None:
    """Gemma 3's local layers see only the last `sliding_window` keys: contexts of 12 to 60
    tokens against a window of 8, through the compiled graph's operator."""
    config = tiny_config(
        "gemma3_text",
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
    )
    rng = random.Random(1)
    prompts = [[rng.randrange(4, 260) for _ in range(12 + 9 * i)] for i in range(5)]
    requests = [(p, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)) for p in prompts]
    engine = tiny_engine(tiny_model(config), compile=True)
    assert engine.runner.compiled is not None
    operator_calls[0] = 0
    outputs = run_all(engine, requests)
    assert operator_calls[0] >= 2 * 11  # 2 layers, the decode steps after the prompts
    assert outputs == run_all(tiny_engine(tiny_model(config)), requests)


def test_a_model_that_does_not_compile_decodes_eager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Callable[..., torch.Tensor]:
        def fail(*args: Any) -> torch.Tensor:
            raise RuntimeError("no C++ compiler here\nmore detail")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    with caplog.at_level(logging.WARNING, logger="limelight.engine.compiled"):
        engine = tiny_engine(compile=True)
    assert engine.runner.compiled is None
    assert "torch.compile failed (no C++ compiler here)" in caplog.text
    request = [([5, 6, 7], params)]
    assert run_all(engine, request) == run_all(tiny_engine(), request)


def test_only_cpu_models_without_recurrent_state_compile() -> None:
    model = tiny_model()
    assert CompiledStep.supports(model, torch.device("cpu"))
    assert not CompiledStep.supports(model, torch.device("cuda"))
    hybrid = tiny_model(tiny_config("minimax", layer_types=["linear_attention", "full_attention"]))
    assert not CompiledStep.supports(hybrid, torch.device("cpu"))
    assert tiny_engine(hybrid, compile=True).runner.compiled is None


def test_the_packaged_model_compiled_picks_the_eager_tokens(operator_calls: list[int]) -> None:
    """int4 SmolLM2 as the server runs it.  The compiled graph rounds to bfloat16 where eager
    does (`emulate_precision_casts`), but may still sum in another order, so greedy texts
    agree until, at most, a near-tie of the eager model's own top tokens (as in
    test_quantized_model.py); measured here, they were the same."""
    options = {"dtype": "bfloat16", "quantization": "int4", "kv_cache_bytes": 32 << 20}
    eager = LLM("smollm2-135m-instruct", **options)
    compiled = LLM("smollm2-135m-instruct", compile=True, **options)
    assert compiled.engine.runner.compiled is not None
    operator_calls[0] = 0
    same = [agrees_until_a_near_tie(p, greedy(eager, p), greedy(compiled, p)[0]) for p in PROMPTS]
    assert any(same)
    # 30 layers, the prompt's step and 15 decode steps a prompt
    assert operator_calls[0] == 30 * 16 * len(PROMPTS)


def test_the_recompile_check_bites(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a warm-up of one row only, a step of three rows would compile again: under the
    tests' stance that fails (in production that step would stop to compile).  A model of
    its own size, as graphs compiled in this process for another instance of the same
    shapes would serve it (the weights are the graphs' inputs)."""
    monkeypatch.setattr("limelight.engine.compiled.WARM_UP_ROWS", (1,))
    monkeypatch.setattr("limelight.engine.compiled.PROMPT_WARM_UP_ROWS", (1,))
    model = tiny_model(tiny_config(intermediate_size=96))
    engine = tiny_engine(model, compile=True, max_num_seqs=4)
    assert engine.runner.compiled is not None
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    with pytest.raises(RuntimeError, match=r"[Rr]ecompil"):
        run_all(engine, [([5, 6, 7], params)] * 3)

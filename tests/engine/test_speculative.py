"""Speculative decoding: outputs equal plain decoding's, and the verification math keeps p.

The engine tests run the tiny random model with and without speculation and compare token
for token: n-gram drafts on prompts that repeat (some drafts accepted, most rejected by a
random model), a draft model of another seed (mostly rejected), and the target itself as
its own draft (every draft accepted, so each step keeps k + 1 tokens and stop conditions
cut mid-draft).  The math tests check the empirical distribution of the kept tokens
against the target distribution p, for a point-mass draft and for a sampled one.
"""

from __future__ import annotations

import logging

import pytest
import torch

from limelight.engine.block_manager import BlockManager
from limelight.engine.llm_engine import LLMEngine
from limelight.engine.scheduler import Scheduler
from limelight.engine.sequence import Sequence
from limelight.engine.speculative import accept_with_draft_probs, ngram_drafts, verify
from limelight.engine.types import EngineConfig, SamplingParams
from tests.engine.fakes import ByteTokenizer, tiny_config, tiny_engine, tiny_model
from tests.engine.test_llm_engine import prompts, run_all

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def repeating(n: int, seed: int) -> list[list[int]]:
    return [(p * 4)[:80] for p in prompts(n, seed=seed)]


def draft_engine(draft_seed: int, **options: object) -> LLMEngine:
    """The tiny target (seed 0) drafted by a tiny model of `draft_seed`.  Every engine gets
    its own models: a model's caches belong to the engine that allocated them."""
    config = EngineConfig(speculative="tiny-draft", **options)  # type: ignore[arg-type]
    return LLMEngine(tiny_model(), ByteTokenizer(), config, tiny_model(seed=draft_seed))  # type: ignore[arg-type]


# --- proposers and scheduling ----------------------------------------------------------------


def test_ngram_drafts_follow_the_latest_longest_match() -> None:
    assert ngram_drafts([1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 2, 3], 3) == [7, 8, 2]  # "2 3" latest
    assert ngram_drafts([1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 1, 2, 3], 3) == [7, 8, 1]  # "1 2 3"
    assert ngram_drafts([5, 6, 7, 6], 4) == [7, 6]  # n = 1, up to the end
    assert ngram_drafts([5, 6, 7], 4) == []
    assert ngram_drafts([5, 6, 5], 4, min_n=2) == []


def test_lookahead_respects_limits_and_constraints() -> None:
    config = EngineConfig(block_size=4, num_kv_blocks=64)
    scheduler = Scheduler(config, BlockManager(64, 4), num_lookahead=4, max_model_len=14)
    free = Sequence("a", [5] * 6, SamplingParams(max_tokens=100), arrival=0)
    short = Sequence("b", [5] * 6, SamplingParams(max_tokens=3), arrival=1)
    near_end = Sequence("c", [5] * 11, SamplingParams(max_tokens=100), arrival=2)
    constrained = Sequence("d", [5] * 6, SamplingParams(max_tokens=100), arrival=3)
    constrained.matcher = object()  # type: ignore[assignment]
    seqs = [free, short, near_end, constrained]
    for seq in seqs:
        scheduler.add(seq)
    for item in scheduler.schedule():  # prefill, then one sampled token each
        item.seq.num_computed += item.num_new
        item.seq.token_ids.append(7)
    lookahead = {item.seq.request_id: item.num_lookahead for item in scheduler.schedule()}
    assert lookahead == {"a": 4, "b": 1, "c": 2, "d": 0}
    for seq in seqs:  # every lookahead slot has a block
        assert len(seq.block_table) * 4 >= len(seq) + lookahead[seq.request_id]


# --- greedy equality -------------------------------------------------------------------------


def test_ngram_greedy_equals_plain_in_mixed_chunked_batches() -> None:
    batch = repeating(3, seed=3) + prompts(2, seed=4)
    plain = run_all(tiny_engine(), batch, GREEDY)
    engine = tiny_engine(speculative="ngram", max_num_batched_tokens=48)
    assert run_all(engine, batch, GREEDY) == plain
    stats = engine.stats
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens


def test_ngram_under_preemption_gives_the_same_outputs() -> None:
    batch = repeating(6, seed=5)
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    small = tiny_engine(speculative="ngram", num_kv_blocks=18, block_size=8)
    assert run_all(small, batch, params) == run_all(tiny_engine(), batch, params)
    assert small.stats.num_preemptions > 0 and small.stats.num_draft_tokens > 0
    assert small.block_manager.num_free_blocks == 18


def test_draft_model_of_another_seed_gives_the_same_outputs() -> None:
    batch = repeating(2, seed=6) + prompts(2, seed=7)
    engine = draft_engine(draft_seed=1, max_num_batched_tokens=48)
    assert run_all(engine, batch, GREEDY) == run_all(tiny_engine(), batch, GREEDY)
    assert engine.stats.num_draft_tokens > 0 and engine.stats.acceptance_rate < 1


def test_self_draft_accepts_every_draft_through_prefix_hits_and_preemption() -> None:
    """The draft's cache mirrors the target's: if it had stale KV anywhere (a prefix-cache
    hit, a recomputed preempted prompt, a rejected slot) its drafts would start to differ."""
    shared = prompts(1, seed=8)[0] * 3
    batch = [[*shared, 5], [*shared, 6], *prompts(3, seed=9)]
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    engine = draft_engine(draft_seed=0, num_kv_blocks=24, block_size=8)
    assert run_all(engine, batch[:1], params) == run_all(tiny_engine(), batch[:1], params)
    assert run_all(engine, batch, params) == run_all(tiny_engine(), batch, params)
    stats = engine.stats
    assert stats.num_prefix_hit_tokens > 0 and stats.num_preemptions > 0
    assert stats.num_draft_tokens > 0 and stats.acceptance_rate > 0.9  # rare near-ties differ
    assert stats.num_steps < stats.num_generated_tokens  # several tokens per step


def test_stop_conditions_cut_mid_draft_exactly() -> None:
    prompt = prompts(1, seed=10)[0]
    free = run_all(tiny_engine(), [prompt], GREEDY)[0]
    text = ByteTokenizer().decode(free)
    cases = [
        *(SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (1, 2, 3, 7)),
        SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop=[text[8:10]]),
        SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop_token_ids=[free[6]]),
        SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=2),
    ]
    plain_engine, spec_engine = tiny_engine(), draft_engine(draft_seed=0)
    for params in cases:
        plain = _outputs(plain_engine, prompt, params)
        spec = _outputs(spec_engine, prompt, params)
        assert spec[:3] == plain[:3], params  # tokens, text, finish reason
        assert spec[3] == pytest.approx(plain[3], abs=1e-4)  # logprobs
        assert spec[4] == spec[0] and spec[5] == spec[1]  # the stream adds up to the output
    assert spec_engine.stats.num_draft_tokens > 0 and spec_engine.stats.acceptance_rate > 0.9


def test_context_length_and_config_errors() -> None:
    params = SamplingParams(temperature=0, max_tokens=100, ignore_eos=True)
    short = draft_engine(draft_seed=0, max_model_len=32)
    out = run_all(short, [[5] * 20], params)[0]
    assert out == run_all(tiny_engine(max_model_len=32), [[5] * 20], params)[0]
    assert len(out) == 12 and short.stats.num_accepted_tokens > 0
    with pytest.raises(ValueError, match="draft model"):
        tiny_engine(speculative="some-draft")  # named, but none given
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        EngineConfig(speculative="ngram", num_speculative_tokens=0)


def _outputs(engine: LLMEngine, prompt: list[int], params: SamplingParams) -> tuple[object, ...]:
    request_id = engine.add_request(prompt, params)
    streamed: list[int] = []
    texts = []
    while engine.has_unfinished:
        for delta in engine.step():
            streamed += delta.token_ids
            texts.append(delta.text)
    out = engine.pop_output(request_id)
    logprobs = [lp.logprob for lp in out.logprobs]
    return out.token_ids, out.text, out.finish_reason, logprobs, streamed, "".join(texts)


def test_seeded_sampling_and_penalties_give_the_same_outputs() -> None:
    """Point-mass verification draws the sampler's own noise once per kept token, so even
    seeded sampling is token for token the same."""
    batch = repeating(3, seed=11)
    for params in [
        SamplingParams(temperature=0.8, top_p=0.9, top_k=40, seed=3, max_tokens=24),
        SamplingParams(temperature=0, repetition_penalty=1.2, presence_penalty=0.5, max_tokens=24),
    ]:
        engine = tiny_engine(speculative="ngram")
        assert run_all(engine, batch, params) == run_all(tiny_engine(), batch, params)
        assert engine.stats.num_draft_tokens > 0


def test_hybrid_models_do_not_speculate(caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config(
        "minimax",
        num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"],
        num_local_experts=2,
        num_experts_per_tok=1,
        intermediate_size=64,
    )
    with caplog.at_level(logging.WARNING):
        engine = tiny_engine(tiny_model(config, seed=3), speculative="ngram")
    assert engine.proposer is None and "linear-attention" in caplog.text
    run_all(engine, repeating(1, seed=12), SamplingParams(temperature=0, max_tokens=6))
    assert engine.stats.num_draft_tokens == 0


# --- verification math -----------------------------------------------------------------------

P = torch.tensor([[0.1, 0.4, 0.2, 0.25, 0.05], [0.3, 0.05, 0.05, 0.3, 0.3]])
TRIALS = 6000


def histogram(tokens: list[int]) -> torch.Tensor:
    return torch.bincount(torch.tensor(tokens), minlength=P.shape[1]).float() / len(tokens)


def total_variation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().sum() / 2)


def test_point_mass_verification_keeps_the_target_distribution() -> None:
    """A draft x is kept with probability p(x); the first kept token is distributed as p,
    and the token after an accepted draft as the next position's p."""
    torch.manual_seed(0)
    seq = Sequence("r", [5], SamplingParams(temperature=1.0), arrival=0)
    trials, _ = verify(P.log().repeat(TRIALS, 1), [seq] * TRIALS, [[1]] * TRIALS)
    firsts = [kept[0] for kept in trials]
    seconds = [kept[1] for kept in trials if len(kept) == 2]
    assert total_variation(histogram(firsts), P[0]) < 0.03
    assert len(seconds) / TRIALS == pytest.approx(float(P[0, 1]), abs=0.03)
    assert total_variation(histogram(seconds), P[1]) < 0.04


def test_sampled_draft_verification_keeps_the_target_distribution() -> None:
    """min(1, p/q) acceptance and residual resampling: kept tokens are distributed as p,
    and drafts are accepted at the rate sum(min(p, q))."""
    q = torch.tensor([[0.3, 0.1, 0.3, 0.2, 0.1]])
    generator = torch.Generator().manual_seed(0)
    firsts, num_accepted = [], 0
    for _ in range(TRIALS):
        x = int(torch.multinomial(q[0], 1, generator=generator))
        kept = accept_with_draft_probs(P, q, [x], generator)
        firsts.append(kept[0])
        num_accepted += len(kept) - 1
    assert total_variation(histogram(firsts), P[0]) < 0.03
    assert num_accepted / TRIALS == pytest.approx(float(torch.minimum(P[0], q[0]).sum()), abs=0.03)


# --- the packaged model ----------------------------------------------------------------------

GROUNDED = (
    "The lighthouse on Gull Rock was built in 1871 from granite quarried on the mainland. "
    "Its lamp was first lit with whale oil, then with kerosene, and was finally electrified "
    "in 1934. Since 1989 the light has been automatic, and the keeper's cottage is now a "
    "small museum that opens every summer.\n\n"
    "Quote the sentence from the passage above that says what the lamp was first lit with."
)
FREE_CHAT = "Give me three tips for sleeping better."


@pytest.mark.slow
def test_packaged_model_greedy_outputs_are_the_same_with_speculation() -> None:
    from limelight import LLM

    plain = LLM("smollm2-135m-instruct")
    params = SamplingParams(temperature=0, max_tokens=48)
    chats = [
        plain.apply_chat_template([{"role": "user", "content": c}]) for c in (GROUNDED, FREE_CHAT)
    ]
    expected = [o.token_ids for o in plain.generate(chats, params)]
    ngram = LLM("smollm2-135m-instruct", speculative="ngram")
    grounded = ngram.generate(chats[0], params)[0].token_ids
    assert ngram.engine.stats.num_accepted_tokens > 0
    assert [grounded, ngram.generate(chats[1], params)[0].token_ids] == expected
    # the model as its own draft, loaded by name: every draft but a near-tie is accepted
    draft = LLM("smollm2-135m-instruct", speculative="smollm2-135m-instruct")
    assert [o.token_ids for o in draft.generate(chats, params)] == expected
    assert draft.engine.stats.acceptance_rate > 0.9

"""The sampler on fixed logits, checked against naive per-row Python references."""

import math
from collections import Counter

import pytest
import torch

from limelight.engine import sampler
from limelight.engine.sampler import apply_penalties, argmax_rows, filtered_probs, sample
from limelight.engine.sequence import Sequence
from limelight.engine.types import SamplingParams


def seq(
    params: SamplingParams, prompt: list[int] | None = None, output: list[int] | None = None
) -> Sequence:
    s = Sequence("r", list(prompt or [1]), params, 0)
    s.token_ids.extend(output or [])  # output tokens follow the prompt, as the engine appends them
    return s


def random_logits(rows: int, vocab: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=generator) * scale  # [rows, V] float32


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def naive_filtered(row: list[float], p: SamplingParams) -> dict[int, float]:
    """Token → probability after temperature, top-k, top-p and min-p, the obvious way."""
    scaled = [x / p.temperature for x in row]
    order = sorted(range(len(row)), key=lambda i: -scaled[i])  # best first
    keep = order[: p.top_k] if p.top_k else order
    if p.top_p < 1:
        probs = softmax([scaled[i] for i in keep])
        cumulative, kept = 0.0, []
        for i, prob in zip(keep, probs, strict=True):
            kept.append(i)
            cumulative += prob
            # the data must not sit on the top-p edge, or float32 rounding decides the test
            assert abs(cumulative - p.top_p) > 1e-4
            if cumulative >= p.top_p:
                break
        keep = kept
    probs = dict(zip(keep, softmax([scaled[i] for i in keep]), strict=True))
    if p.min_p:
        floor = p.min_p * max(probs.values())
        assert all(abs(q - floor) > 1e-6 for q in probs.values())
        probs = {i: q for i, q in probs.items() if q >= floor}
    total = sum(probs.values())
    return {i: q / total for i, q in probs.items()}


def test_greedy_is_argmax_and_top_k_one_is_greedy() -> None:
    logits = random_logits(6, 40)
    greedy = [seq(SamplingParams(temperature=0)) for _ in range(6)]
    tokens, logprobs = sample(logits, greedy)
    assert tokens == [max(range(40), key=lambda v: row[v]) for row in logits.tolist()]
    assert logprobs == [None] * 6
    torch.manual_seed(1)
    top1 = [seq(SamplingParams(temperature=t, top_k=1)) for t in (0.3, 1.0, 2.5, 7.0, 1.0, 0.9)]
    for _ in range(5):
        assert sample(logits, top1)[0] == tokens


MIXED = [
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=1.0, top_k=3),
    SamplingParams(temperature=0.7, top_p=0.8),
    SamplingParams(temperature=1.3, min_p=0.1),
    SamplingParams(temperature=1.0, top_k=5, top_p=0.6, min_p=0.2),
    SamplingParams(temperature=2.0, top_p=0.95),
    SamplingParams(temperature=0.5, top_k=10, min_p=0.05),
    SamplingParams(temperature=1.0, top_p=0.3),
]


def test_top_k_top_p_min_p_masks_match_naive_reference_in_one_batch() -> None:
    logits = random_logits(len(MIXED), 30, seed=3)
    probs = filtered_probs(logits, [seq(p) for p in MIXED])
    assert probs.shape == logits.shape
    for row, (values, params) in enumerate(zip(logits.tolist(), MIXED, strict=True)):
        expected = naive_filtered(values, params)
        got = probs[row] / probs[row].sum()  # min-p leaves the row unnormalised
        assert set(torch.nonzero(got).flatten().tolist()) == set(expected), params
        for token, q in expected.items():
            assert got[token].item() == pytest.approx(q, abs=1e-5)
    # every filtered row really cuts: a test that kept every token would prove nothing
    kept = [len(naive_filtered(v, p)) for v, p in zip(logits.tolist(), MIXED, strict=True)]
    assert kept[0] == 30 and all(1 <= n < 30 for n in kept[1:])


@pytest.mark.parametrize("candidates", [8, 40])
def test_wide_vocabularies_filter_from_their_best_tokens_or_sort_the_whole_row(
    monkeypatch: pytest.MonkeyPatch, candidates: int
) -> None:
    """A row whose nucleus lies within the `CANDIDATES` best tokens is filtered from them; a
    flat one reaches past them and the batch sorts its whole rows: both as the reference.
    Two rows with nuclei of 22 tokens, one flat row (1,571), a row that does not filter at
    all, over a 2,000-token vocabulary."""
    monkeypatch.setattr("limelight.engine.sampler.CANDIDATES", candidates)
    sorted_calls = []
    whole_rows = sampler._nucleus_sorted
    monkeypatch.setattr(
        sampler, "_nucleus_sorted", lambda *args: sorted_calls.append(1) or whole_rows(*args)
    )
    logits = random_logits(4, 2000, seed=11, scale=3.0)
    logits[3] = random_logits(1, 2000, seed=12, scale=0.5)[0]  # flat: a wide nucleus
    params = [
        SamplingParams(temperature=0.8, top_p=0.9),
        SamplingParams(temperature=1.0),  # no filter: every token
        SamplingParams(temperature=0.7, top_k=30, top_p=0.95),
        SamplingParams(temperature=1.0, top_p=0.9),
    ]
    # 8 candidates: row 2's top_k widens them to 30, which holds the nuclei of 22 tokens
    for rows, sorts in (([0, 1, 2], 0), ([0, 1, 2, 3], 1)):
        sorted_calls.clear()
        probs = filtered_probs(logits[rows], [seq(params[r]) for r in rows])
        assert len(sorted_calls) == sorts
        for got, r in zip(probs, rows, strict=True):
            expected = naive_filtered(logits[r].tolist(), params[r])
            assert set(torch.nonzero(got).flatten().tolist()) == set(expected)
            for token, q in expected.items():
                assert got[token].item() == pytest.approx(q, abs=1e-5)
    nucleus = [len(naive_filtered(logits[r].tolist(), params[r])) for r in range(4)]
    assert nucleus == [22, 2000, 22, 1571]


def test_draws_stay_inside_the_filtered_support() -> None:
    logits = random_logits(len(MIXED), 30, seed=3).repeat(50, 1)  # [8 * 50, V]
    params = MIXED * 50
    torch.manual_seed(0)
    tokens, _ = sample(logits, [seq(p) for p in params])
    for row, (token, p) in enumerate(zip(tokens, params, strict=True)):
        assert token in naive_filtered(logits[row].tolist(), p)


def test_top_k_larger_than_the_vocabulary_keeps_every_token() -> None:
    logits = random_logits(2, 5)
    probs = filtered_probs(logits, [seq(SamplingParams(top_k=8)), seq(SamplingParams())])
    assert torch.allclose(probs[0], logits[0].softmax(-1))


def test_seeded_request_draws_the_same_tokens_whatever_its_row_and_neighbours() -> None:
    vocab = 50
    logits = random_logits(1, vocab, seed=4, scale=0.5)  # flat: the draw really is random
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=123)

    def draws(row: int, neighbours: list[SamplingParams], global_seed: int) -> list[int]:
        torch.manual_seed(global_seed)  # the unseeded rows' noise must not matter
        target = seq(params)
        batch = [seq(p) for p in neighbours]
        batch.insert(row, target)
        out = []
        for _ in range(20):
            out.append(sample(logits.expand(len(batch), vocab).clone(), batch)[0][row])
        return out

    alone = draws(0, [], 0)
    crowded = draws(3, [SamplingParams(), SamplingParams(temperature=0), *MIXED[2:5]], 1)
    other_seed = draws(1, [SamplingParams(seed=9), SamplingParams(top_k=2)], 2)
    assert alone == crowded == other_seed
    assert len(set(alone)) > 5  # it did sample, not pick one token
    different = seq(SamplingParams(temperature=1.0, top_p=0.95, seed=124))
    assert [sample(logits.clone(), [different])[0][0] for _ in range(20)] != alone


def frequencies(tokens: list[int], vocab: int) -> list[float]:
    counts = Counter(tokens)
    return [counts[v] / len(tokens) for v in range(vocab)]


def chi_square(tokens: list[int], expected: list[float]) -> float:
    counts, n = Counter(tokens), len(tokens)
    return sum((counts[v] - n * q) ** 2 / (n * q) for v, q in enumerate(expected) if q > 0)


LOGITS5 = [2.0, 1.0, 0.5, 0.0, -1.0]
CHI2_DF4_P999 = 18.47  # chi-square critical value, 4 degrees of freedom, p = 0.001


def test_empirical_frequencies_match_softmax_over_temperature() -> None:
    n, temperature = 4000, 0.8
    expected = softmax([x / temperature for x in LOGITS5])
    torch.manual_seed(0)
    batch = torch.tensor([LOGITS5]).expand(n, 5).clone()
    tokens, _ = sample(batch, [seq(SamplingParams(temperature=temperature)) for _ in range(n)])
    got = frequencies(tokens, 5)
    assert max(abs(g - q) for g, q in zip(got, expected, strict=True)) < 0.03
    assert chi_square(tokens, expected) < CHI2_DF4_P999
    # a sampler that ignored the temperature would fail the same check
    assert chi_square(tokens, softmax(LOGITS5)) > CHI2_DF4_P999


def test_one_seeded_request_over_many_steps_follows_the_filtered_distribution() -> None:
    params = SamplingParams(temperature=1.5, top_k=4, min_p=0.3, seed=5)  # keeps 3
    expected = naive_filtered(LOGITS5, params)
    s, logits = seq(params), torch.tensor([LOGITS5])
    tokens = [sample(logits, [s])[0][0] for _ in range(3000)]
    assert set(tokens) == set(expected)
    got = frequencies(tokens, 5)
    assert max(abs(got[v] - expected.get(v, 0.0)) for v in range(5)) < 0.03
    assert chi_square(tokens, [expected.get(v, 0.0) for v in range(5)]) < 13.82  # df 2


def naive_penalised(row: list[float], s: Sequence) -> list[float]:
    p, out = s.params, list(row)
    if p.repetition_penalty != 1.0:
        for token in set(s.token_ids):  # prompt and output (HF rule)
            value = out[token]
            out[token] = value / p.repetition_penalty if value > 0 else value * p.repetition_penalty
    counts = Counter(s.output_ids)  # OpenAI presence/frequency: output only
    for token, count in counts.items():
        out[token] -= p.frequency_penalty * count + p.presence_penalty
    return out


def test_penalties_match_naive_reference() -> None:
    vocab = 12
    logits = random_logits(6, vocab, seed=6)
    prompt, output = [1, 2, 2, 3], [3, 4, 4, 4, 7]
    seqs = [
        seq(SamplingParams(repetition_penalty=1.3), prompt, output),
        seq(SamplingParams(presence_penalty=0.8), prompt, output),
        seq(SamplingParams(frequency_penalty=0.5), prompt, output),
        seq(
            SamplingParams(repetition_penalty=0.7, presence_penalty=-0.4, frequency_penalty=1.5),
            prompt,
            output,
        ),
        seq(SamplingParams(), prompt, output),  # no penalties: untouched
        seq(SamplingParams(presence_penalty=1.0, frequency_penalty=1.0), prompt),  # no output
    ]
    got = apply_penalties(logits.clone(), seqs)
    for row, s in enumerate(seqs):
        expected = naive_penalised(logits[row].tolist(), s)
        assert got[row].tolist() == pytest.approx(expected, abs=1e-5), s.params
    assert not torch.equal(got[:4], logits[:4])  # the penalties did change something
    assert torch.equal(got[4:], logits[4:])
    # both signs were exercised on the repetition-penalised tokens
    seen = logits[0, sorted(set(prompt + output))]
    assert (seen > 0).any() and (seen < 0).any()


def test_greedy_with_penalties_picks_the_penalised_argmax_but_reports_raw_logprobs() -> None:
    logits = torch.tensor([[3.0, 2.9, 0.5, -1.0, 2.0]])
    s = seq(SamplingParams(temperature=0, repetition_penalty=1.5, logprobs=2), [0], [0, 0])
    tokens, logprobs = sample(logits, [s])
    assert tokens == [1]  # 3.0 / 1.5 = 2.0 drops token 0 below token 1
    raw = logits[0].log_softmax(-1)
    assert logprobs[0].logprob == pytest.approx(raw[1].item())
    assert logprobs[0].top[0] == (0, pytest.approx(raw[0].item()))  # raw best, not penalised


def test_logprobs_are_raw_log_softmax_sorted_and_contain_the_best_token() -> None:
    vocab = 40
    logits = random_logits(5, vocab, seed=7)
    wanted = [None, 0, 1, 5, 20]
    seqs = [seq(SamplingParams(temperature=0.9, top_k=4, logprobs=n)) for n in wanted]
    torch.manual_seed(0)
    tokens, logprobs = sample(logits, seqs)
    assert logprobs[0] is None
    for row in range(1, 5):
        values = logits[row].tolist()
        top = max(values)
        log_z = top + math.log(sum(math.exp(v - top) for v in values))
        lp = logprobs[row]
        assert lp.token_id == tokens[row]
        assert lp.logprob == pytest.approx(values[tokens[row]] - log_z, abs=1e-5)
        assert len(lp.top) == wanted[row]
        ids = [i for i, _ in lp.top]
        assert ids == sorted(range(vocab), key=lambda v: -values[v])[: wanted[row]]
        assert [v for _, v in lp.top] == pytest.approx([values[i] - log_z for i in ids], abs=1e-5)
        if wanted[row]:
            assert lp.top[0][0] == max(range(vocab), key=lambda v: values[v])


def test_argmax_rows_picks_the_first_of_tied_maxima_like_argmax() -> None:
    rows = torch.zeros(4, 49_152, dtype=torch.bfloat16)
    rows[0, [5, 900, 40_000]] = 3  # ties
    rows[1, [48_000, 7]] = 2
    rows[3, [100, 30_000]] = float("inf")  # row 2: all equal
    assert argmax_rows(rows).tolist() == [5, 7, 0, 100]
    levels = torch.randint(0, 4, (64, 5_000), generator=torch.Generator().manual_seed(0))
    assert torch.equal(argmax_rows(levels.float()), levels.float().argmax(dim=-1))


def test_a_small_support_races_alone_and_keeps_the_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Top-k leaves 5 of 2,000 tokens: the race runs over those 5 (no noise drawn for the
    vocabulary) and the draws follow their renormalised probabilities."""
    n, temperature = 4000, 0.8
    row = LOGITS5 + [-10.0] * 1995
    whole_vocabulary = []
    noise = sampler.exponential_noise
    monkeypatch.setattr(
        sampler, "exponential_noise", lambda *args: whole_vocabulary.append(1) or noise(*args)
    )
    torch.manual_seed(0)
    params = SamplingParams(temperature=temperature, top_k=5)
    tokens, _ = sample(torch.tensor([row]).expand(n, len(row)).clone(), [seq(params)] * n)
    assert not whole_vocabulary
    expected = softmax([x / temperature for x in LOGITS5])
    assert chi_square(tokens, expected) < CHI2_DF4_P999
    assert chi_square(tokens, softmax(LOGITS5)) > CHI2_DF4_P999

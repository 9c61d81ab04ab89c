"""BM25Index: scores equal a from-scratch BM25F, and incremental updates equal a rebuild."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from limelight.memory.bm25 import BM25Index, analyze

DOCS = [
    "Caroline went to an LGBTQ support group yesterday.",
    "Melanie painted a sunrise over the lake last year.",
    "Caroline is researching adoption agencies for her future family.",
    "The kids loved the camping trip; Melanie roasted marshmallows.",
    "Running every morning keeps Melanie calm. She runs by the lake.",
    "Adoption takes a long time, but Caroline is patient.",
]


def reference_bm25(
    query: str, docs: dict[int, list[tuple[str, float]]], k1: float = 1.2, b: float = 0.75
) -> dict[int, float]:
    """BM25F straight from its definition, recomputed from scratch."""
    tfs: dict[int, Counter[str]] = {}
    lengths: dict[int, float] = {}
    for slot, fields in docs.items():
        tf: Counter[str] = Counter()
        for text, weight in fields:
            for term in analyze(text):
                tf[term] += weight  # type: ignore[assignment]
        tfs[slot], lengths[slot] = tf, sum(w * len(analyze(t)) for t, w in fields)
    mean = sum(lengths.values()) / len(docs)
    scores = dict.fromkeys(docs, 0.0)
    for term in set(analyze(query)):
        df = sum(1 for tf in tfs.values() if term in tf)
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for slot, tf in tfs.items():
            f = tf.get(term, 0)
            if f:
                norm = k1 * (1 - b + b * lengths[slot] / mean)
                scores[slot] += idf * f * (k1 + 1) / (f + norm)
    return scores


def test_analyzer_lowercases_stems_and_drops_stop_words() -> None:
    assert analyze("The Runners were RUNNING to their Agencies!") == ["runner", "run", "agenc"]
    assert analyze("") == []


def test_scores_match_the_definition() -> None:
    index = BM25Index()
    docs = {i: [(text, 1.0), (text.split(".")[0], 0.5)] for i, text in enumerate(DOCS)}
    for slot, fields in docs.items():
        index.add(slot, fields)
    for query in ["Caroline adoption", "lake Melanie", "sunrise painting", "unknown words"]:
        expected = reference_bm25(query, docs)
        got = index.scores(query, len(DOCS))
        assert got == pytest.approx([expected[i] for i in range(len(DOCS))], rel=1e-5, abs=1e-6)


def test_incremental_updates_equal_a_rebuild() -> None:
    rng = random.Random(0)
    index, live = BM25Index(), dict[int, str]()
    for step in range(200):
        if live and rng.random() < 0.4:
            slot = rng.choice(sorted(live))
            text = live.pop(slot)
            index.remove(slot, analyze(text) if step % 2 else None)  # with and without terms
        else:
            slot = rng.choice([s for s in range(40) if s not in live])
            live[slot] = rng.choice(DOCS) + " " + rng.choice(DOCS)
            index.add(slot, [(live[slot], 1.0)])
    rebuilt = BM25Index()
    for slot, text in live.items():
        rebuilt.add(slot, [(text, 1.0)])
    assert index.postings == rebuilt.postings
    assert index.total_length == pytest.approx(rebuilt.total_length)
    np.testing.assert_allclose(
        index.scores("Caroline lake", 40), rebuilt.scores("Caroline lake", 40)
    )


def test_empty_index_and_bad_parameters() -> None:
    assert not BM25Index().scores("anything", 3).any()
    with pytest.raises(ValueError, match="k1"):
        BM25Index(k1=-1)

"""HybridIndex against a naive reference that recomputes every score from its definition."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta

import numpy as np
import pytest

from limelight.memory import HybridIndex, InvalidMemoryError, MemoryItem, RetrievalConfig
from limelight.memory.types import OWN_TEXT_WEIGHT
from tests.memory.fakes import HashEmbedder
from tests.memory.test_bm25 import DOCS, reference_bm25

T0 = datetime(2024, 1, 1)
NAMES = ["Caroline", "Melanie"]


def make_item(rng: random.Random, n: int) -> MemoryItem:
    parts = tuple(rng.choice(DOCS) for _ in range(rng.randint(0, 3)))
    text = rng.choice(DOCS) if not parts else parts[0]
    return MemoryItem(
        id=f"m{n}",
        kind=rng.choice(["episode", "fact"]),
        text=text,
        source_ids=tuple(f"t{rng.randint(0, 12)}" for _ in range(rng.randint(1, 2))),
        created_at=T0 + timedelta(days=rng.randint(0, 400)),
        context=parts,
        about=tuple(rng.choice(NAMES) for _ in range(rng.randint(0, 3))),
    )


def reference_search(
    items: list[MemoryItem],
    embedder: HashEmbedder,
    config: RetrievalConfig,
    query: str,
    k: int,
    now: datetime,
) -> list[tuple[str, float]]:
    def unit(text: str) -> np.ndarray:
        return embedder.embed([text])[0]

    def vector(item: MemoryItem) -> np.ndarray:
        own = unit(item.text)
        if not item.context:
            return (1 + OWN_TEXT_WEIGHT) * own
        mean = np.mean([unit(p) for p in item.context], axis=0)
        return mean / np.linalg.norm(mean) + OWN_TEXT_WEIGHT * own

    def minmax(values: list[float]) -> list[float]:
        lo, hi = min(values), max(values)
        return [(v - lo) / (hi - lo) if hi > lo else 0.0 for v in values]

    q = unit(query)
    dense = minmax([float(vector(item) @ q) for item in items])
    docs = {
        i: [("\n".join(it.context) or it.text, 1.0), (it.text, OWN_TEXT_WEIGHT)]
        for i, it in enumerate(items)
    }
    bm25 = reference_bm25(query, docs, config.bm25_k1, config.bm25_b)
    keyword = minmax([bm25[i] for i in range(len(items))])
    named = {n.lower() for n in NAMES if re.search(rf"\b{n.lower()}\b", query.lower())}
    scored = []
    for i, item in enumerate(items):
        share = sum(a.lower() in named for a in item.about) / max(len(item.about), 1)
        age = max((now - item.created_at).total_seconds(), 0) / 86400
        recency = 0.5 ** (age / config.recency_half_life_days)
        score = (
            config.dense_weight * dense[i]
            + config.keyword_weight * keyword[i]
            + config.speaker_weight * share
            + config.recency_weight * recency
        )
        scored.append((score, i))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    results: list[tuple[str, float]] = []
    covered: dict[str, set[str]] = {}
    for score, i in scored:
        item, seen = items[i], covered.setdefault(items[i].kind, set())
        if len(results) == k:
            break
        if not set(item.source_ids) <= seen:
            seen.update(item.source_ids)
            results.append((item.id, score))
    return results


@pytest.mark.parametrize("seed", range(4))
def test_search_matches_the_reference_through_updates(seed: int) -> None:
    rng = random.Random(seed)
    embedder = HashEmbedder()
    config = RetrievalConfig(speaker_weight=0.3, recency_weight=0.2, recency_half_life_days=50)
    index = HybridIndex(embedder, config)
    live: dict[str, MemoryItem] = {}
    for n in range(60):
        roll = rng.random()
        if live and roll < 0.25:
            victim = rng.choice(sorted(live))
            index.remove([victim])
            del live[victim]
        elif live and roll < 0.4:  # replace an item by a new version under the same id
            new = make_item(rng, n)
            new.id = rng.choice(sorted(live))
            index.upsert([new])
            live[new.id] = new
        else:
            item = make_item(rng, n)
            index.add([item])
            live[item.id] = item
    assert len(index) == len(live) and {i.id for i in index} == set(live)
    order = [index.get(i) for i in sorted(live, key=lambda i: index._slots[i])]
    items = [i for i in order if i is not None]
    now = T0 + timedelta(days=300)
    for query in ["Caroline adoption", "Melanie by the lake", "marshmallows", "zebra"]:
        got = [(item.id, score) for item, score in index.search(query, 5, now)]
        expected = reference_search(items, embedder, config, query, 5, now)
        assert [i for i, _ in got] == [i for i, _ in expected], query
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_embed_batches_each_distinct_text_once() -> None:
    embedder = HashEmbedder()
    index = HybridIndex(embedder)
    a = MemoryItem("a", "episode", DOCS[0], ("t1",), T0, context=(DOCS[5], DOCS[0], DOCS[1]))
    b = MemoryItem("b", "episode", DOCS[1], ("t2",), T0, context=(DOCS[0], DOCS[1], DOCS[2]))
    index.add([a, b])
    assert len(embedder.calls) == 1
    assert sorted(embedder.calls[0]) == sorted({DOCS[0], DOCS[1], DOCS[2], DOCS[5]})
    assert a.embedding is not None and a.embedding.shape == (embedder.dim,)
    index.add([MemoryItem("c", "fact", "x y", ("t3",), T0, embedding=a.embedding)])
    assert len(embedder.calls) == 1  # an item with an embedding is not embedded again


def test_results_skip_items_whose_sources_are_already_covered() -> None:
    index = HybridIndex(HashEmbedder(), RetrievalConfig(recency_weight=0))
    text = "Caroline researches adoption agencies"
    index.add(
        [
            MemoryItem("wide", "episode", text, ("t1", "t2"), T0),
            MemoryItem("inside", "episode", text + " today", ("t2",), T0),
            MemoryItem("fact", "fact", text, ("t2",), T0),  # another kind: kept
        ]
    )
    ids = [item.id for item, _ in index.search("Caroline adoption agencies", 3, T0)]
    assert "inside" not in ids and set(ids) == {"wide", "fact"}


def test_a_named_speaker_and_recency_lift_their_items() -> None:
    config = RetrievalConfig(dense_weight=0, keyword_weight=0, speaker_weight=1, recency_weight=0.5)
    index = HybridIndex(HashEmbedder(), config)
    old, new = T0, T0 + timedelta(days=100)
    index.add(
        [
            MemoryItem("mel", "episode", "went hiking", ("t1",), old, about=("Melanie",)),
            MemoryItem("car", "episode", "went hiking", ("t2",), old, about=("Caroline",)),
            MemoryItem("recent", "episode", "went hiking", ("t3",), new, about=("Caroline",)),
        ]
    )
    now = new
    assert index.search("Where did melanie go?", 3, now)[0][0].id == "mel"
    assert index.search("where did she go?", 3, now)[0][0].id == "recent"
    by_name = index.search("where did I go?", 3, now, names=["Melanie"])
    assert by_name[0][0].id == "mel"


def test_errors_name_the_problem() -> None:
    index = HybridIndex(HashEmbedder())
    item = MemoryItem("a", "fact", "text", (), T0)
    index.add([item])
    with pytest.raises(InvalidMemoryError, match="already indexed"):
        index.add([MemoryItem("a", "fact", "other", (), T0)])
    bad = MemoryItem("b", "fact", "t", (), T0, embedding=np.zeros(3))
    with pytest.raises(InvalidMemoryError, match="shape"):
        index.add([bad])
    with pytest.raises(InvalidMemoryError, match="shape"):
        index.upsert([MemoryItem("a", "fact", "new text", (), T0), bad])
    assert index.get("a") is item and len(index) == 1  # a bad batch changes nothing
    with pytest.raises(InvalidMemoryError, match="twice"):
        index.upsert([MemoryItem("x", "fact", "t", (), T0)] * 2)
    with pytest.raises(InvalidMemoryError, match="k must be"):
        index.search("text", 0)
    with pytest.raises(InvalidMemoryError, match="unknown kind"):
        MemoryItem("c", "note", "t", (), T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidMemoryError, match="no text"):
        MemoryItem("c", "fact", "  ", (), T0)
    with pytest.raises(InvalidMemoryError, match="weights"):
        RetrievalConfig(dense_weight=-1)
    assert HybridIndex(HashEmbedder()).search("anything", 3) == []
    index.remove(["a", "missing"])
    assert len(index) == 0 and index.get("a") is None

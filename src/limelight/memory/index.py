"""`HybridIndex`: one (user, character)'s memories in RAM, searched by hybrid retrieval.

Items go in and out one at a time (`add`, `remove`, `upsert` replaces by id); each sits in
a slot of a vector matrix [capacity, D] and of a BM25F index (own text weighted above its
context, as in `item_vector`).  `search(query, k, now)` scores every item with a convex
combination of normalised signals:

    score = dense_weight   · minmax(query · item vector)      embeddings
          + keyword_weight · minmax(BM25F(query, item))        keywords
          + speaker_weight · share of the item about a name the query mentions
          + recency_weight · 0.5 ^ (age / recency_half_life)

Min-max puts both retrievers on [0, 1] per query, so neither dominates by scale (it beat
reciprocal-rank fusion and z-scores on bench/memory.py).  The top k are returned best
first, skipping an item whose sources are all covered by a better one of the same kind, so
k slots cover k distinct things.  Storing items is the service's; this rebuilds from them.
Not thread-safe: a caller that shares an index between threads serialises its calls.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from limelight.memory.bm25 import BM25Index, analyze
from limelight.memory.types import (
    OWN_TEXT_WEIGHT,
    InvalidMemoryError,
    MemoryItem,
    context_vector,
    item_vector,
)

if TYPE_CHECKING:  # the index runs on any Embedder; importing one would pull in torch
    from limelight.memory.embedder import Embedder

_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RetrievalConfig:
    dense_weight: float = 1.0
    keyword_weight: float = 1.0
    speaker_weight: float = 0.2
    recency_weight: float = 0.05
    recency_half_life_days: float = 90.0
    bm25_k1: float = 1.2
    bm25_b: float = 0.75

    def __post_init__(self) -> None:
        weights = (self.dense_weight, self.keyword_weight, self.speaker_weight)
        if min(*weights, self.recency_weight) < 0:
            raise InvalidMemoryError("retrieval weights must be >= 0")
        if self.recency_half_life_days <= 0:
            raise InvalidMemoryError("recency_half_life_days must be > 0")
        if self.bm25_k1 < 0 or not 0 <= self.bm25_b <= 1:
            raise InvalidMemoryError("BM25 needs bm25_k1 >= 0 and 0 <= bm25_b <= 1")


class HybridIndex:
    def __init__(self, embedder: Embedder, config: RetrievalConfig | None = None) -> None:
        self.embedder = embedder
        self.config = config or RetrievalConfig()
        self.keywords = BM25Index(self.config.bm25_k1, self.config.bm25_b)
        self._items: list[MemoryItem | None] = []  # by slot; None marks a free slot
        self._slots: dict[str, int] = {}  # item id → slot
        self._free: list[int] = []
        self._vectors = np.zeros((0, embedder.dim), dtype=np.float32)  # [capacity, D]
        self._times = np.zeros(0, dtype=np.float64)  # created_at, epoch seconds
        self._live = np.zeros(0, dtype=bool)  # False on free slots
        self._about: dict[str, dict[int, float]] = {}  # lowercased name → {slot: share}

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slots

    def __iter__(self) -> Iterator[MemoryItem]:
        return (item for item in self._items if item is not None)

    def get(self, item_id: str) -> MemoryItem | None:
        slot = self._slots.get(item_id)
        return None if slot is None else self._items[slot]

    def embed(self, items: Sequence[MemoryItem]) -> None:
        """Give each item without an embedding its `item_vector`, in one batched call.

        Each distinct text is embedded once: an episode's own text is usually one of its
        context passages, and neighbouring episodes share passages.
        """
        todo = [item for item in items if item.embedding is None]
        texts = list(dict.fromkeys(t for item in todo for t in (item.text, *item.context)))
        if not texts:
            return
        row = {text: i for i, text in enumerate(texts)}
        vectors = self.embedder.embed(texts)  # [T, D]
        for item in todo:
            context = [row[t] for t in item.context]
            around = context_vector(vectors[context]) if context else None
            item.embedding = item_vector(vectors[row[item.text]], around)

    def add(self, items: Iterable[MemoryItem]) -> None:
        """Add new items (embedding those that have none); an id already here is an error.

        Every item is checked before any goes in: a bad batch leaves the index as it was.
        """
        items = self._prepare(items)
        taken = sorted(item.id for item in items if item.id in self._slots)
        if taken:
            raise InvalidMemoryError(f"memory ids already indexed: {taken}; use upsert")
        for item in items:
            self._insert(item)

    def upsert(self, items: Iterable[MemoryItem]) -> None:
        """Add items, replacing any indexed item with the same id."""
        items = self._prepare(items)
        self.remove(item.id for item in items)
        for item in items:
            self._insert(item)

    def remove(self, item_ids: Iterable[str]) -> None:
        """Remove items by id; unknown ids are ignored."""
        for item_id in list(item_ids):
            slot = self._slots.pop(item_id, None)
            if slot is None:
                continue
            item = self._items[slot]
            assert item is not None
            self.keywords.remove(slot, analyze(item.matched_text + "\n" + item.text))
            for name in _shares(item):
                del self._about[name][slot]
                if not self._about[name]:
                    del self._about[name]  # a name no memory is about is not looked for
            self._items[slot] = None
            self._vectors[slot] = 0.0
            self._live[slot] = False
            self._free.append(slot)

    def search(
        self, query: str, k: int = 10, now: datetime | None = None, names: Sequence[str] = ()
    ) -> list[tuple[MemoryItem, float]]:
        """The k best items for `query`, best first, with their fused scores.

        `names` adds people the query is about beyond those it names (e.g. the user, for
        "what did I say..."); `now` (default: the current UTC time) anchors recency.
        """
        if k < 1:
            raise InvalidMemoryError(f"k must be >= 1 (got {k})")
        if not self._slots:
            return []
        scores = self.scores(query, now, names)
        return self._select(scores, k)

    def scores(
        self, query: str, now: datetime | None = None, names: Sequence[str] = ()
    ) -> np.ndarray:
        """The fused score of every slot ([capacity] float64, -inf on free slots)."""
        c, size = self.config, len(self._items)
        live = self._live[:size]
        dense = self._vectors[:size] @ self.embedder.embed_query(query)
        keyword = self.keywords.scores(query, size)
        fused = c.dense_weight * _minmax(dense, live) + c.keyword_weight * _minmax(keyword, live)
        fused += c.speaker_weight * self._speaker_share(query, names, size)
        moment = (now or datetime.now(UTC)).timestamp()
        age_days = np.maximum(moment - self._times[:size], 0.0) / _DAY
        fused += c.recency_weight * 0.5 ** (age_days / c.recency_half_life_days)
        return np.where(live, fused, -np.inf)

    def _select(self, scores: np.ndarray, k: int) -> list[tuple[MemoryItem, float]]:
        results: list[tuple[MemoryItem, float]] = []
        covered: dict[str, set[str]] = {}  # kind → source ids of the items chosen so far
        for slot in np.argsort(-scores, kind="stable"):
            item = self._items[slot]
            if item is None or len(results) == k:
                break
            seen = covered.setdefault(item.kind, set())
            if item.source_ids and seen.issuperset(item.source_ids):
                continue  # adds nothing a better item of its kind does not already give
            seen.update(item.source_ids)
            results.append((item, float(scores[slot])))
        return results

    def _speaker_share(self, query: str, names: Sequence[str], size: int) -> np.ndarray:
        share = np.zeros(size, dtype=np.float64)
        wanted = {n.lower() for n in names} | {
            n for n in self._about if re.search(rf"\b{re.escape(n)}\b", query.lower())
        }
        for name in wanted & self._about.keys():
            slots = self._about[name]
            share[np.fromiter(slots.keys(), np.int64, len(slots))] += np.fromiter(
                slots.values(), np.float64, len(slots)
            )
        return share

    def _prepare(self, items: Iterable[MemoryItem]) -> list[MemoryItem]:
        """Embed the items that need it and check the batch; nothing is changed yet."""
        items = list(items)
        repeated = sorted(_duplicates([item.id for item in items]))
        if repeated:
            raise InvalidMemoryError(f"memory ids given twice in one batch: {repeated}")
        self.embed(items)
        for item in items:
            assert item.embedding is not None
            if item.embedding.shape != (self.embedder.dim,):
                raise InvalidMemoryError(
                    f"memory {item.id!r}: embedding must have shape ({self.embedder.dim},), "
                    f"not {item.embedding.shape}; was it made by another embedder?"
                )
        return items

    def _insert(self, item: MemoryItem) -> None:
        vector = item.embedding
        assert vector is not None and item.id not in self._slots
        slot = self._free.pop() if self._free else self._grow()
        self._items[slot] = item
        self._slots[item.id] = slot
        self._vectors[slot] = vector
        self._times[slot] = item.created_at.timestamp()
        self._live[slot] = True
        fields = [(item.matched_text, 1.0), (item.text, OWN_TEXT_WEIGHT)]
        self.keywords.add(slot, fields)
        for name, share in _shares(item).items():
            self._about.setdefault(name, {})[slot] = share

    def _grow(self) -> int:
        slot = len(self._items)
        self._items.append(None)
        if slot == len(self._vectors):  # double the capacity: amortised O(1) inserts
            capacity = max(16, 2 * slot)
            self._vectors = _resized(self._vectors, capacity)
            self._times = _resized(self._times, capacity)
            self._live = _resized(self._live, capacity)
        return slot


def _shares(item: MemoryItem) -> dict[str, float]:
    """Lowercased name → the share of the item's parts that are about that name."""
    shares: dict[str, float] = {}
    for name in item.about:
        key = name.lower()
        shares[key] = shares.get(key, 0.0) + 1.0 / len(item.about)
    return shares


def _minmax(values: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Rescale the live entries to [0, 1] (all 0 when they are all equal)."""
    lo, hi = values[live].min(), values[live].max()
    if hi <= lo:
        return np.zeros(len(values), dtype=np.float64)
    return (values.astype(np.float64) - lo) / (hi - lo)


def _resized(array: np.ndarray, capacity: int) -> np.ndarray:
    out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out


def _duplicates(ids: list[str]) -> set[str]:
    return {i for i, count in Counter(ids).items() if count > 1}

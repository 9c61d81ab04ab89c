"""Keyword scoring: an incremental Okapi BM25 index over integer slots, and its analyzer.

`BM25Index` keeps an inverted index (term → {slot: term frequency}) that documents enter
and leave one at a time; `scores(query, size)` returns a dense array of BM25 scores over
slots.  `analyze` turns text into index terms: lowercase words, English stop words removed,
Snowball-stemmed (PyStemmer).

Why hand-written: the well-kept BM25 libraries (`bm25s`, `rank-bm25`) build an index over a
fixed corpus and must rebuild it to add or drop one document.  Memory indexes here are one
per (user, character), small, and change after every exchange, so an inverted index updated
in place is both simpler and faster.  Stemming, the part worth a library, is PyStemmer's.
Nothing here knows about memories or embeddings.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import Stemmer

_WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your
    yours yourself yourselves s t ll ve re d m don didn doesn isn wasn""".split()  # noqa: SIM905
)
_stemmer = Stemmer.Stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def analyze(text: str) -> list[str]:
    """Text → index terms, in order: lowercased words, no stop words, stemmed."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


class BM25Index:
    """Okapi BM25 over documents keyed by integer slot, updated one document at a time.

    A document is one or more weighted fields (BM25F): a term's frequency is the weighted
    sum of its counts in the fields, and so is the document's length.  idf is Lucene's
    `log(1 + (N - df + 0.5) / (df + 0.5))`, which stays positive for common terms.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={k1}, b={b})")
        self.k1, self.b = k1, b
        self.postings: dict[str, dict[int, float]] = {}  # term → {slot: weighted frequency}
        self.lengths: dict[int, float] = {}  # slot → weighted number of terms
        self.total_length = 0.0

    def __len__(self) -> int:
        return len(self.lengths)

    def __contains__(self, slot: int) -> bool:
        return slot in self.lengths

    def add(self, slot: int, fields: Sequence[tuple[str, float]]) -> None:
        """Index a document made of (text, weight) fields under `slot`."""
        assert slot not in self.lengths, f"slot {slot} is already indexed"
        frequencies: dict[str, float] = {}
        length = 0.0
        for text, weight in fields:
            terms = analyze(text)
            length += weight * len(terms)
            for term, count in Counter(terms).items():
                frequencies[term] = frequencies.get(term, 0.0) + weight * count
        for term, frequency in frequencies.items():
            self.postings.setdefault(term, {})[slot] = frequency
        self.lengths[slot] = length
        self.total_length += length

    def remove(self, slot: int, terms: Iterable[str] | None = None) -> None:
        """Drop a document.  `terms` (its analyzed terms) saves a scan of every posting."""
        for term in set(terms) if terms is not None else list(self.postings):
            docs = self.postings.get(term)
            if docs is None or docs.pop(slot, None) is None:
                continue
            if not docs:
                del self.postings[term]
        self.total_length -= self.lengths.pop(slot)

    def idf(self, term: str) -> float:
        df = len(self.postings.get(term, ()))
        return math.log1p((len(self.lengths) - df + 0.5) / (df + 0.5))

    def scores(self, query: str, size: int) -> np.ndarray:
        """BM25 of `query` against every slot below `size`: [size] float32, 0 where absent."""
        out = np.zeros(size, dtype=np.float32)
        if not self.lengths:
            return out
        mean_length = max(self.total_length / len(self.lengths), 1e-9)
        for term in set(analyze(query)):
            docs = self.postings.get(term)
            if not docs:
                continue
            idf = self.idf(term)
            slots = np.fromiter(docs.keys(), dtype=np.int64, count=len(docs))
            tf = np.fromiter(docs.values(), dtype=np.float32, count=len(docs))
            lengths = np.fromiter((self.lengths[s] for s in docs), np.float32, len(docs))
            norm = self.k1 * (1 - self.b + self.b * lengths / mean_length)
            out[slots] += idf * tf * (self.k1 + 1) / (tf + norm)
        return out

"""Fakes for memory tests: an embedder that needs no model, and a scripted `Generate`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from limelight.engine.types import SamplingParams
from limelight.memory import Embedder
from limelight.memory.bm25 import analyze


class HashEmbedder(Embedder):
    """Bag of words hashed into `dim` signed buckets, normalised: texts sharing words are
    close, texts sharing none are near-orthogonal.  Deterministic across processes."""

    def __init__(self, dim: int = 64) -> None:
        self.name = "hash"
        self.dim = dim
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for term in analyze(text) or ["<empty>"]:
                digest = hashlib.blake2b(term.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += 1.0 if digest[4] % 2 else -1.0
            out[row] /= max(float(np.linalg.norm(out[row])), 1e-6)
        return out


class ScriptedGenerate:
    """A `Generate` returning canned outputs in order, recording what it was asked."""

    def __init__(self, *outputs: str) -> None:
        self.outputs = list(outputs)
        self.calls: list[tuple[list[dict[str, str]], SamplingParams]] = []

    def __call__(self, messages: list[dict[str, str]], params: SamplingParams) -> str:
        self.calls.append((messages, params))
        return self.outputs.pop(0)

"""limelight.memory: what a character remembers about each user, and how it is recalled.

Episodes are derived from the turns without an LLM (`derive_episodes`), facts and a rolling
summary by the engine under a JSON schema (`extract_facts`, `update_summary`); a
`HybridIndex` per (user, character) recalls them by embeddings, BM25 and recency.  Storing
them is `service.py`'s.  Names load on first use, so the index does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BM25Index": "limelight.memory.bm25",
    "BertEmbedder": "limelight.memory.embedder",
    "Embedder": "limelight.memory.embedder",
    "load_embedder": "limelight.memory.embedder",
    "EpisodeConfig": "limelight.memory.episodes",
    "derive_episodes": "limelight.memory.episodes",
    "episodes_touched": "limelight.memory.episodes",
    "Fact": "limelight.memory.extract",
    "extract_facts": "limelight.memory.extract",
    "FactUpdate": "limelight.memory.extract",
    "reconcile_fact": "limelight.memory.extract",
    "ExtractionError": "limelight.memory.prompting",
    "HybridIndex": "limelight.memory.index",
    "RetrievalConfig": "limelight.memory.index",
    "Generate": "limelight.memory.prompting",
    "llm_generate": "limelight.memory.prompting",
    "update_summary": "limelight.memory.summary",
    "InvalidMemoryError": "limelight.memory.types",
    "MemoryItem": "limelight.memory.types",
    "MemoryKind": "limelight.memory.types",
    "Turn": "limelight.memory.types",
}

if TYPE_CHECKING:
    from limelight.memory.bm25 import BM25Index as BM25Index
    from limelight.memory.embedder import BertEmbedder as BertEmbedder
    from limelight.memory.embedder import Embedder as Embedder
    from limelight.memory.embedder import load_embedder as load_embedder
    from limelight.memory.episodes import EpisodeConfig as EpisodeConfig
    from limelight.memory.episodes import derive_episodes as derive_episodes
    from limelight.memory.episodes import episodes_touched as episodes_touched
    from limelight.memory.extract import Fact as Fact
    from limelight.memory.extract import FactUpdate as FactUpdate
    from limelight.memory.extract import extract_facts as extract_facts
    from limelight.memory.extract import reconcile_fact as reconcile_fact
    from limelight.memory.index import HybridIndex as HybridIndex
    from limelight.memory.index import RetrievalConfig as RetrievalConfig
    from limelight.memory.prompting import ExtractionError as ExtractionError
    from limelight.memory.prompting import Generate as Generate
    from limelight.memory.prompting import llm_generate as llm_generate
    from limelight.memory.summary import update_summary as update_summary
    from limelight.memory.types import InvalidMemoryError as InvalidMemoryError
    from limelight.memory.types import MemoryItem as MemoryItem
    from limelight.memory.types import MemoryKind as MemoryKind
    from limelight.memory.types import Turn as Turn


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'limelight.memory' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)

"""The assembled stack's retrieval service: a small vector store over HTTP.

`python -m bench.e2e_retrieval --port P` holds texts per user in RAM and answers
`POST /search {"user", "query", "k"}` with the k texts nearest the query by cosine
similarity, as a vector database service would; `POST /memories {"user", "texts"}` adds
texts.  It embeds with the same packaged all-MiniLM-L6-v2 that limelight's memory uses
(`limelight.memory.load_embedder`), so the two stacks pay for the same model; what
differs is the process boundary and the HTTP hop on every turn.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

from limelight.memory import Embedder, load_embedder


class MemoriesAdd(BaseModel):
    user: str
    texts: list[str] = Field(min_length=1)


class SearchQuery(BaseModel):
    user: str
    query: str = Field(min_length=1)
    k: int = Field(default=6, ge=1, le=100)


class SearchResult(BaseModel):
    texts: list[str]
    scores: list[float]


class VectorStore:
    """Per user: the texts and their unit vectors [N, dim], searched by dot product."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.texts: dict[str, list[str]] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def add(self, user: str, texts: list[str]) -> int:
        vectors = self.embedder.embed(texts)  # [N, dim]
        with self._lock:
            old = self.vectors.get(user, np.zeros((0, vectors.shape[1]), np.float32))
            self.vectors[user] = np.concatenate([old, vectors])
            self.texts[user] = self.texts.get(user, []) + list(texts)
            return len(self.texts[user])

    def search(self, user: str, query: str, k: int) -> SearchResult:
        with self._lock:
            texts, vectors = self.texts.get(user, []), self.vectors.get(user)
        if vectors is None or not texts:
            return SearchResult(texts=[], scores=[])
        scores = vectors @ self.embedder.embed_query(query)  # [N]
        top = np.argsort(-scores, kind="stable")[:k]
        return SearchResult(texts=[texts[i] for i in top], scores=[float(scores[i]) for i in top])


def create_app(embedder: Embedder) -> FastAPI:
    app = FastAPI(title="e2e retrieval")
    store = VectorStore(embedder)
    store.embedder.embed_query("warm-up")  # the first call pays torch's set-up

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "embedder": embedder.name}

    @app.post("/memories")
    def add_memories(body: MemoriesAdd) -> dict[str, int]:
        return {"count": store.add(body.user, body.texts)}

    @app.post("/search")
    def search(body: SearchQuery) -> SearchResult:
        return store.search(body.user, body.query, body.k)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bench/e2e.py's retrieval service")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--embedder", default="all-minilm-l6-v2")
    args = parser.parse_args(argv)
    app = create_app(load_embedder(args.embedder))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

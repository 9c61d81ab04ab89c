"""limelight's long-term memory on LoCoMo, beside a BM25 baseline over single turns.

`python bench/memory.py [--json]` (or `limelight bench memory ...`) ingests each LoCoMo
conversation into its own `HybridIndex` through the product's episode code
(`derive_episodes`), then asks every question of categories 1-4 and checks whether the
top k memories cover the turns that answer it.  A question counts as recalled when all of
its evidence turns are covered; a memory covers the turns it was derived from.  Reported
per category and overall: recall@5, recall@10, the share of evidence turns found in the
top 10, the prompt tokens the top 10 would inject (SmolLM2's tokenizer), retrieval latency
(query embedding included) and ingest time; the peer is BM25 over single turns (the same
analyzer) in the same run.  With `--json` the last line is one JSON object of everything.

The design options reproduce its ablations (all 10 conversations, recall@10 / tokens@10):
    defaults                     0.748 / 541   (BM25 over single turns: 0.557)
    --context-turns 0            0.655 / 543   episodes matched on their own turns only
    --speaker-weight 0           0.735 / 539   no lift for memories of a named speaker
    --max-chars 1                0.740 / 491   one turn per episode
    --max-chars 250              0.751 / 593   bigger episodes: too close to the 600 budget
    --recency-weight 0           0.747 / 540   (LoCoMo asks after the fact: recency is moot)
    --no-captions                0.743 / 506   without the captions of shared photos
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.memory_locomo import CATEGORIES, DEFAULT_DATA, Conversation, Question, load_locomo
from limelight.memory import (
    BM25Index,
    EpisodeConfig,
    HybridIndex,
    MemoryItem,
    RetrievalConfig,
    derive_episodes,
    load_embedder,
)

TOKENIZER_MODEL = "smollm2-135m-instruct"
TOKEN_BUDGET = 600  # mean prompt tokens the top 10 may cost


@dataclass
class Tally:
    """Per-category (and overall) counts; figures are computed at the end."""

    questions: int = 0
    recalled_5: int = 0
    recalled_10: int = 0
    evidence: int = 0
    found_10: int = 0
    bm25_recalled_5: int = 0
    bm25_recalled_10: int = 0

    def figures(self) -> dict[str, float | int]:
        n = max(self.questions, 1)
        return {
            "questions": self.questions,
            "recall_at_5": self.recalled_5 / n,
            "recall_at_10": self.recalled_10 / n,
            "evidence_found_at_10": self.found_10 / max(self.evidence, 1),
            "bm25_recall_at_5": self.bm25_recalled_5 / n,
            "bm25_recall_at_10": self.bm25_recalled_10 / n,
        }


@dataclass
class Run:
    tallies: dict[str, Tally] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    tokens_at_10: list[int] = field(default_factory=list)
    ingest_seconds: float = 0.0
    num_turns: int = 0
    num_episodes: int = 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    conversations = load_locomo(args.data, captions=not args.no_captions)
    conversations = conversations[: args.conversations]
    episodes = EpisodeConfig(max_chars=args.max_chars, context_turns=args.context_turns)
    retrieval = RetrievalConfig(
        speaker_weight=args.speaker_weight, recency_weight=args.recency_weight
    )
    embedder = load_embedder()
    count_tokens = _token_counter()
    run = Run()
    for conversation in conversations:
        questions = conversation.questions[: args.questions]
        index = _ingest(conversation, embedder, episodes, retrieval, run)
        baseline = _turn_baseline(conversation)
        for question in questions:
            _ask(question, conversation, index, baseline, count_tokens, run)
    report = build_report(run, embedder.name, episodes, retrieval, len(conversations))
    print_report(report)
    if args.json:
        print(json.dumps(report))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="limelight bench memory", description="long-term memory recall on LoCoMo"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="locomo10.json")
    parser.add_argument("--conversations", type=int, default=None, help="only the first N")
    parser.add_argument("--questions", type=int, default=None, help="per conversation")
    defaults_e, defaults_r = EpisodeConfig(), RetrievalConfig()
    parser.add_argument("--max-chars", type=int, default=defaults_e.max_chars)
    parser.add_argument("--context-turns", type=int, default=defaults_e.context_turns)
    parser.add_argument("--speaker-weight", type=float, default=defaults_r.speaker_weight)
    parser.add_argument("--recency-weight", type=float, default=defaults_r.recency_weight)
    parser.add_argument("--no-captions", action="store_true", help="drop shared-photo captions")
    return parser


def _ingest(
    conversation: Conversation,
    embedder: Any,
    episodes: EpisodeConfig,
    retrieval: RetrievalConfig,
    run: Run,
) -> HybridIndex:
    """The product's ingest path: turns → episodes → embedded into a fresh index."""
    start = time.perf_counter()
    index = HybridIndex(embedder, retrieval)
    items = derive_episodes(conversation.turns, episodes)
    index.add(items)
    run.ingest_seconds += time.perf_counter() - start
    run.num_turns += len(conversation.turns)
    run.num_episodes += len(items)
    if not run.latencies_ms:
        index.search("warm-up", 10, conversation.asked_at)  # first call pays torch's setup
    return index


def _turn_baseline(conversation: Conversation) -> tuple[BM25Index, list[str]]:
    index = BM25Index()
    for slot, turn in enumerate(conversation.turns):
        index.add(slot, [(turn.line, 1.0)])
    return index, [t.id for t in conversation.turns]


def _ask(
    question: Question,
    conversation: Conversation,
    index: HybridIndex,
    baseline: tuple[BM25Index, list[str]],
    count_tokens: Any,
    run: Run,
) -> None:
    start = time.perf_counter()
    hits = index.search(question.text, 10, conversation.asked_at)
    run.latencies_ms.append((time.perf_counter() - start) * 1e3)
    items = [item for item, _score in hits]
    run.tokens_at_10.append(sum(count_tokens(item.text) for item in items))
    bm25, turn_ids = baseline
    scores = bm25.scores(question.text, len(turn_ids))
    top_turns = [turn_ids[i] for i in np.argsort(-scores, kind="stable")[:10]]
    evidence = set(question.evidence)
    for name in ("overall", CATEGORIES[question.category]):
        tally = run.tallies.setdefault(name, Tally())
        tally.questions += 1
        tally.recalled_5 += evidence <= _covered(items[:5])
        tally.recalled_10 += evidence <= _covered(items)
        tally.evidence += len(evidence)
        tally.found_10 += len(evidence & _covered(items))
        tally.bm25_recalled_5 += evidence <= set(top_turns[:5])
        tally.bm25_recalled_10 += evidence <= set(top_turns)


def _covered(items: list[MemoryItem]) -> set[str]:
    return {source for item in items for source in item.source_ids}


def _token_counter() -> Any:
    from limelight.engine.loader import open_checkpoint

    tokenizer = open_checkpoint(TOKENIZER_MODEL).tokenizer
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def build_report(
    run: Run, embedder: str, episodes: EpisodeConfig, retrieval: RetrievalConfig, n: int
) -> dict[str, Any]:
    overall = run.tallies.get("overall", Tally()).figures()
    latencies = run.latencies_ms or [0.0]
    return {
        "recall_at_5": overall["recall_at_5"],
        "recall_at_10": overall["recall_at_10"],
        "evidence_found_at_10": overall["evidence_found_at_10"],
        "per_category": {
            name: run.tallies[name].figures() for name in CATEGORIES.values() if name in run.tallies
        },
        "mean_tokens_at_10": float(np.mean(run.tokens_at_10)) if run.tokens_at_10 else 0.0,
        "p50_retrieval_ms": float(np.percentile(latencies, 50)),
        "p95_retrieval_ms": float(np.percentile(latencies, 95)),
        "ingest_seconds": run.ingest_seconds,
        "bm25_recall_at_5": overall["bm25_recall_at_5"],
        "bm25_recall_at_10": overall["bm25_recall_at_10"],
        "num_questions": overall["questions"],
        "num_conversations": n,
        "num_turns": run.num_turns,
        "num_episodes": run.num_episodes,
        "embedder": embedder,
        "episodes": asdict(episodes),
        "retrieval": asdict(retrieval),
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"LoCoMo: {report['num_conversations']} conversations, {report['num_turns']} turns → "
        f"{report['num_episodes']} episodes, {report['num_questions']} questions; "
        f"embedder {report['embedder']}"
    )
    print(f"{'':14}{'questions':>10}{'R@5':>8}{'R@10':>8}{'found@10':>10}{'BM25 R@10':>11}")
    rows = {**report["per_category"], "overall": _overall_row(report)}
    for name, f in rows.items():
        print(
            f"{name:14}{f['questions']:>10}{f['recall_at_5']:>8.3f}{f['recall_at_10']:>8.3f}"
            f"{f['evidence_found_at_10']:>10.3f}{f['bm25_recall_at_10']:>11.3f}"
        )
    ratio = report["recall_at_10"] / max(report["bm25_recall_at_10"], 1e-9)
    print(f"recall@10 ÷ BM25 over single turns: {ratio:.2f}")
    tokens = report["mean_tokens_at_10"]
    print(f"prompt tokens of the top 10: {tokens:.0f} on average (budget {TOKEN_BUDGET})")
    print(
        f"retrieval: p50 {report['p50_retrieval_ms']:.1f} ms, p95 "
        f"{report['p95_retrieval_ms']:.1f} ms (query embedding included); ingest "
        f"{report['ingest_seconds']:.1f} s ({report['num_turns']} turns)"
    )


def _overall_row(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("recall_at_5", "recall_at_10", "evidence_found_at_10", "bm25_recall_at_10")
    return {"questions": report["num_questions"], **{k: report[k] for k in keys}}


if __name__ == "__main__":
    sys.exit(main())

"""bench/memory.py on a slice of LoCoMo: the JSON report's shape and the sanity of its
figures (never timings), and the dataset's sloppy evidence ids normalised."""

from __future__ import annotations

import json

import pytest
from bench.memory import main
from bench.memory_locomo import CATEGORIES, DEFAULT_DATA, _evidence, load_locomo

pytestmark = pytest.mark.skipif(not DEFAULT_DATA.is_file(), reason="no shared LoCoMo data")

KEYS = {
    "recall_at_5",
    "recall_at_10",
    "evidence_found_at_10",
    "per_category",
    "mean_tokens_at_10",
    "p50_retrieval_ms",
    "p95_retrieval_ms",
    "ingest_seconds",
    "bm25_recall_at_10",
}


def test_report_on_one_conversation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "--conversations", "1", "--questions", "40"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) >= KEYS
    assert report["num_conversations"] == 1 and report["num_questions"] == 40
    assert set(report["per_category"]) <= set(CATEGORIES.values())
    assert sum(c["questions"] for c in report["per_category"].values()) == 40
    for figures in [report, *report["per_category"].values()]:
        for key in ("recall_at_5", "recall_at_10", "evidence_found_at_10", "bm25_recall_at_10"):
            assert 0 <= figures[key] <= 1
        assert figures["recall_at_5"] <= figures["recall_at_10"]
    assert report["recall_at_10"] > 0.3  # far above chance (10 of ~500 episodes)
    assert 0 < report["mean_tokens_at_10"] <= 1000
    assert 0 < report["p50_retrieval_ms"] <= report["p95_retrieval_ms"]
    assert report["ingest_seconds"] > 0
    assert 0 < report["num_episodes"] <= report["num_turns"]


def test_dataset_reading() -> None:
    ids = {"D8:6", "D9:17", "D11:26", "D30:5"}
    assert _evidence(["D8:6; D9:17"], ids) == ("D8:6", "D9:17")
    assert _evidence(["D:11:26", "D30:05", "D", "D99:1"], ids) == ("D11:26", "D30:5")
    conversations = load_locomo()
    assert len(conversations) == 10
    first = conversations[0]
    assert first.turns[0].id == "D1:1" and first.turns[0].session_id == "S1"
    assert all(q.category in CATEGORIES and q.evidence for q in first.questions)
    assert any("[shares " in t.text for t in first.turns)
    assert not any("[shares " in t.text for t in load_locomo(captions=False)[0].turns)

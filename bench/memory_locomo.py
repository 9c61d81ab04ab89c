"""LoCoMo for bench/memory.py: conversations as `Turn`s, questions with their evidence.

Reads `locomo10.json` (10 conversations of ~20-30 dated sessions between two people, and
questions naming the turns that answer them).  Only the dialogue is used: the dataset's
`observation`, `session_summary` and `event_summary` fields are GPT-written and never read,
since the memory system must derive its own.  A turn that shared a picture keeps the
picture's caption (`blip_caption`, what a vision model saw), as a chat would have it.
Category 5 (adversarial, unanswerable) has no evidence to retrieve and is left out.

Evidence ids are normalised where the file is sloppy ("D8:6; D9:17", "D:11:26", "D30:05");
ids naming no turn are dropped, and a question left without evidence is skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from limelight.memory import Turn

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo10.json"
_EVIDENCE = re.compile(r"D:?(\d+):0*(\d+)")


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    evidence: tuple[str, ...]  # turn ids that answer it
    category: int


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    turns: list[Turn]
    questions: list[Question]

    @property
    def asked_at(self) -> datetime:
        """Questions come after the last session."""
        return max(t.created_at for t in self.turns)


def load_locomo(path: Path = DEFAULT_DATA, captions: bool = True) -> list[Conversation]:
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        message = f"bench memory: cannot read LoCoMo at {path} ({err}); pass --data"
        raise SystemExit(message) from err
    return [_conversation(sample, captions) for sample in raw]


def _conversation(sample: dict[str, Any], captions: bool) -> Conversation:
    dialogue = sample["conversation"]
    turns: list[Turn] = []
    number = 1
    while f"session_{number}" in dialogue:
        when = _parse_date(dialogue[f"session_{number}_date_time"])
        for turn in dialogue[f"session_{number}"]:
            text = turn["text"]
            if captions and turn.get("blip_caption"):
                text += f" [shares {turn['blip_caption']}]"
            turns.append(Turn(turn["dia_id"], turn["speaker"], text, when, f"S{number}"))
        number += 1
    ids = {t.id for t in turns}
    questions = []
    for qa in sample["qa"]:
        evidence = _evidence(qa.get("evidence", []), ids)
        if qa["category"] in CATEGORIES and evidence:
            questions.append(Question(qa["question"], evidence, qa["category"]))
    return Conversation(sample["sample_id"], turns, questions)


def _parse_date(text: str) -> datetime:
    return datetime.strptime(text, "%I:%M %p on %d %B, %Y")  # "1:56 pm on 8 May, 2023"


def _evidence(raw: list[str], ids: set[str]) -> tuple[str, ...]:
    found = []
    for entry in raw:
        for part in re.split(r"[;\s]+", entry.strip()):
            match = _EVIDENCE.fullmatch(part)
            if match and f"D{match[1]}:{match[2]}" in ids:
                found.append(f"D{match[1]}:{match[2]}")
    return tuple(dict.fromkeys(found))

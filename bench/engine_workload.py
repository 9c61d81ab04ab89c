"""What bench/engine.py asks of both engines: sizes, prompts and the figures' names.

Both sides build their prompts from the functions here, tokenize them with their own
tokenizer (the same vocabulary: one GGUF) and cut them to the same token counts, so they
compute the same tokens; each reports a fingerprint of its token ids to prove it.  The
sizes travel to the worker processes as JSON (`run_worker`).  Nothing here measures
anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# limelight's weight precisions: int4 is the default (decode reads int4 blocks and an int8
# head, batches bfloat16), as the server's
PRECISIONS: dict[str, dict[str, Any]] = {
    "int4": {"dtype": "bfloat16", "quantization": "int4"},
    "int8": {"dtype": "bfloat16", "quantization": "int8"},
    "bfloat16": {"dtype": "bfloat16"},
    "float32": {"dtype": "float32"},
}


@dataclass(frozen=True, slots=True)
class Workload:
    num_new_tokens: int = 128  # per stream, EOS ignored
    num_prefill_tokens: int = 1000  # the prefill prompt and the shared character prefix
    num_streams: int = 16
    num_repeats: int = 3  # single-stream and TTFT figures are medians of this many runs
    num_threads: int = 2

    @classmethod
    def quick(cls) -> Workload:
        return cls(num_new_tokens=16, num_prefill_tokens=200, num_streams=4, num_repeats=1)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Workload:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class Figure:
    key: str  # the key of the worker's result and of the `ratios` object
    label: str  # a template over the workload's fields
    unit: str
    is_higher_better: bool


FIGURES = [  # labels are templates over the workload's fields
    Figure("decode", "decode, 1 stream, {num_new_tokens} new tokens", "tok/s", True),
    Figure("prefill", "prefill, {num_prefill_tokens}-token prompt", "tok/s", True),
    Figure("concurrent_throughput", "decode, {num_streams} streams × {num_new_tokens} (aggregate)",
           "tok/s", True),
    Figure("shared_prefix_ttft", "TTFT after a shared {num_prefill_tokens}-token prefix", "s",
           False),
    Figure("peak_rss", "peak RSS during the {num_streams} streams", "MiB", False),
    Figure("cpu_seconds_per_mtok", "CPU-seconds per 1M tokens, {num_streams} streams", "s",
           False),
]  # fmt: skip

SHARED_CARD_SEED = 7
PREFILL_CARD_SEED = 100  # + repeat index: a new prompt each time, so nothing is cached
DECODE_PROMPT = "Once upon a time, in a lighthouse at the edge of the world,"

_NAMES = ["Mira", "Tobias", "Esk", "Yevna", "Calder", "Oona", "Rafe", "Liesl"]
_TRAITS = [
    "speaks softly but never backs down from an argument",
    "keeps a notebook of every storm she has ever seen",
    "distrusts anyone who arrives by the northern road",
    "laughs at her own jokes before she reaches the punchline",
    "collects brass keys whose locks were lost long ago",
    "cannot resist correcting the grammar of sea captains",
    "hums old harbour songs while mending nets",
    "remembers the name of every ship that sank off the cape",
    "bakes black bread on Sundays and gives half of it away",
    "is afraid of moths but not of the dark",
]
_PLACES = ["the salt marsh", "the old customs house", "the cliff path", "the drowned chapel",
           "the market under the bridge", "the keeper's cottage", "the lamp room",
           "the smugglers' cave"]  # fmt: skip
_EVENTS = [
    "the winter the lamp went dark for three nights",
    "the arrival of the cartographer with the silver compass",
    "the flood that carried the church bell out to sea",
    "the summer of the red tides",
    "the night a stranger paid for bread with a foreign coin",
    "the wedding that ended in a brawl over a borrowed boat",
]


def character_card(seed: int) -> str:
    """A deterministic character card long enough for any prefix length here (~4k tokens).

    No blank lines: llama.cpp's `smollm` pre-tokenizer makes one token of "\\n\\n" where
    the Hugging Face tokenizer (and limelight's) makes two, and the prompts must be the
    same token ids for both engines.
    """
    rng = random.Random(seed)
    name = rng.choice(_NAMES)
    lines = [f"Character card #{seed}: {name}, keeper of the lighthouse at Harrow Point."]
    for i in range(120):
        trait, place, event = rng.choice(_TRAITS), rng.choice(_PLACES), rng.choice(_EVENTS)
        lines.append(
            f"{i + 1}. {name} {trait}. She often walks to {place}, "
            f"and she still talks about {event}."
        )
    return "\n".join(lines)


def follow_up(index: int) -> str:
    """A user's turn after the character card; different for every index."""
    place = _PLACES[index % len(_PLACES)]
    return f"\nUser ({index}): What happened the last time you went to {place}?\nKeeper:"


def stream_prompt(index: int) -> str:
    """The short, distinct prompt of concurrent stream `index`."""
    return f"Story {index}: The traveller from {_PLACES[index % len(_PLACES)]} knocked twice and"


@dataclass(frozen=True, slots=True)
class Prompts:
    """Every prompt of a workload as token ids, from one engine's tokenizer."""

    decode: list[int]
    prefill: list[list[int]]  # one per repeat, all different
    streams: list[list[int]]  # one per concurrent stream
    shared: list[list[int]]  # the same character prefix, then a different user turn each

    @classmethod
    def build(cls, encode: Callable[[str], list[int]], workload: Workload) -> Prompts:
        """`encode` tokenizes without special tokens; long texts are cut to token counts."""
        n = workload.num_prefill_tokens
        prefix = encode(character_card(SHARED_CARD_SEED))[:n]
        return cls(
            decode=encode(DECODE_PROMPT),
            prefill=[encode(character_card(PREFILL_CARD_SEED + r))[:n]
                     for r in range(workload.num_repeats)],
            streams=[encode(stream_prompt(i)) for i in range(workload.num_streams)],
            shared=[prefix + encode(follow_up(i)) for i in range(workload.num_repeats + 1)],
        )  # fmt: skip

    @property
    def fingerprint(self) -> str:
        """A short hash of every token id, to show that both engines got the same ones."""
        everything = [self.decode, *self.prefill, *self.streams, *self.shared]
        flat = [t for ids in everything for t in ids]
        return hashlib.sha1(json.dumps(flat).encode()).hexdigest()[:12]


def progress(engine: str, what: str) -> None:
    """One line on stderr, so a long run shows where it is; stdout stays the report."""
    print(f"[{engine}] {what}", file=sys.stderr, flush=True)


def run_worker(module: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m module args` from the repository; its last stdout line is JSON."""
    env = dict(env or os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, stdout=subprocess.PIPE, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} failed with exit code {result.returncode}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))

"""`Sequence`: one request's tokens and its place in the KV cache.

A sequence is a list of token ids (prompt then output) of which the first `num_computed`
have their keys and values in the cache.  Prefill and decode are the same thing seen
from here: each step computes some of the pending tokens `token_ids[num_computed:]`, and
the request samples a new token when none are left pending.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import TYPE_CHECKING

import torch

from limelight.engine.types import FinishReason, SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from limelight.engine.structured import GrammarMatcher


class Status(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass(eq=False)
class Sequence:
    request_id: str
    token_ids: list[int]
    params: SamplingParams
    arrival: int  # admission order: the scheduler preempts the newest first
    background: bool = False  # nobody waits on it: its prompt yields to replies (scheduler)
    queued_at: float = field(default_factory=time.monotonic)
    num_prompt_tokens: int = 0
    num_computed: int = 0  # tokens whose KV is in the cache
    num_cached_prompt_tokens: int = 0  # prompt tokens found in the prefix cache
    block_table: list[int] = field(default_factory=list)
    state_slot: int = 0  # hybrid models: row in the linear-attention state pool (0 = none)
    restore_from: int | None = None  # hybrid: snapshot to load before the next step
    status: Status = Status.WAITING
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    generator: torch.Generator | None = None
    matcher: GrammarMatcher | None = None  # follows params.constraint; set by the engine

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_pending(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

"""Which sequences run in the next step, and how many of their tokens.

Continuous batching with chunked prefill under one token budget per step: running
sequences that are decoding go first (one token each) so that a long prompt never stalls
them, then prefill chunks of running sequences, then newly admitted waiting ones, until
`max_num_batched_tokens` is spent.  When a decoding sequence needs a KV block and none is
free, the newest running sequence is preempted: its blocks are released and it waits to
be recomputed (its prefix will usually still be in the cache).

Background requests (memory work: nobody waits on them) yield to the others: their prompt
tokens are computed, and waiting ones admitted, only in steps that no other request needs
a prompt chunk or a decode slot in, or once they have waited `BACKGROUND_MAX_WAIT_S`.  A
step with prompt tokens runs every row through the dense weights (quantized.py), so even a
small background chunk would slow every reply's decode step several times over.  And all
background prompts together get at most `BACKGROUND_CHUNK` tokens per step, even when they
run alone: a reply arriving meanwhile waits for a short step, not a 512-token one (about
0.55 s here), and when several have waited their limit at once (a server's memory jobs
after a busy minute), replies' steps grow by one chunk, not one per job (four users' third
turns decoded at 2-4 tok/s each with one per job).  Once prefilled, a background request
decodes beside the others (one row more).

With speculative decoding on, a decoding sequence also gets up to `num_lookahead` slots
for draft tokens (see `speculative.py`), as far as the budget, its `max_tokens`, the
context length and the free blocks allow; room for drafts never preempts anyone.

The scheduler owns the queues and the block manager's bookkeeping; it never runs a model.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from limelight.engine.block_manager import BlockManager
from limelight.engine.sequence import Sequence, Status
from limelight.engine.types import EngineConfig

BACKGROUND_MAX_WAIT_S = 30.0  # then a background prompt goes in as if someone waited on it
BACKGROUND_CHUNK = 32  # prompt tokens of all background requests per step (~40 ms here)


@dataclass(slots=True)
class ScheduledSeq:
    seq: Sequence
    num_new: int  # tokens computed for it in this step
    snapshots: list[tuple[int, int]]  # hybrid models: states to save (consumed, slot)
    samples: bool  # the step reaches the end of the pending tokens, so a token is sampled
    num_lookahead: int = 0  # KV slots reserved past the pending token for draft tokens
    draft_ids: list[int] = field(default_factory=list)  # drafts verified in this step

    def add_drafts(self, draft_ids: list[int]) -> None:
        """Compute `draft_ids` after the pending token in this step, to verify them."""
        assert self.samples and not self.draft_ids and len(draft_ids) <= self.num_lookahead
        self.draft_ids = draft_ids
        self.num_new += len(draft_ids)


class Scheduler:
    def __init__(
        self,
        config: EngineConfig,
        block_manager: BlockManager,
        num_lookahead: int = 0,
        max_model_len: int | None = None,
    ) -> None:
        self.config = config
        self.blocks = block_manager
        self.num_lookahead = num_lookahead  # draft tokens per decoding sequence (0: none)
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.free_state_slots = list(range(config.max_num_seqs, 0, -1))  # 0 means none
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> list[ScheduledSeq]:
        batch = self._schedule(defer_background=self._has_foreground())
        if not batch and self.has_work:  # nothing else can run (no KV room): background may
            batch = self._schedule(defer_background=False)
        return batch

    def _schedule(self, defer_background: bool) -> list[ScheduledSeq]:
        budget = self.config.max_num_batched_tokens
        decoding = [s for s in self.running if s.num_pending == 1]
        prefilling = [s for s in self.running if s.num_pending > 1]
        batch: list[tuple[Sequence, int]] = []
        for seq in decoding:
            if seq.status is not Status.RUNNING:
                continue  # preempted while making room for an older sequence
            if budget and self._make_room(seq):
                batch.append((seq, 1))
                budget -= 1
        lookahead: dict[Sequence, int] = {}  # only once every decoding sequence has its slot
        for seq, _ in batch:
            if seq.status is Status.RUNNING:
                lookahead[seq] = self._reserve_lookahead(seq, budget)
                budget -= lookahead[seq]
        batch += self._prompt_chunks(prefilling, budget, defer_background)
        # a decoding sequence may have been preempted after it was batched
        batch = [(s, n) for s, n in batch if s.status is Status.RUNNING]
        return [
            ScheduledSeq(
                s, n, self.blocks.plan_snapshots(s, n), n == s.num_pending, lookahead.get(s, 0)
            )
            for s, n in batch
        ]

    def _prompt_chunks(
        self, prefilling: list[Sequence], budget: int, defer_background: bool
    ) -> list[tuple[Sequence, int]]:
        """Prompt tokens within `budget`: running prefills (replies first), then newly
        admitted waiting requests; background prompts share one `BACKGROUND_CHUNK`."""
        chunks: list[tuple[Sequence, int]] = []
        background = BACKGROUND_CHUNK  # prompt tokens left for background requests
        for seq in sorted(prefilling, key=lambda s: s.background):  # replies first
            if seq.status is not Status.RUNNING or self._yields(seq, defer_background):
                continue
            take = self._chunk(seq, budget, background)
            if take:
                chunks.append((seq, take))
                budget -= take
                background -= take if seq.background else 0
        while budget and len(self.running) < self.config.max_num_seqs:
            admitted = self._next_waiting(defer_background, background > 0)
            if admitted is None or not self.blocks.can_allocate(admitted):
                break
            self.waiting.remove(admitted)
            self._admit(admitted)
            take = self._chunk(admitted, budget, background)
            chunks.append((admitted, take))
            budget -= take
            background -= take if admitted.background else 0
        return chunks

    @staticmethod
    def _chunk(seq: Sequence, budget: int, background: int) -> int:
        """Prompt tokens for `seq` in this step; background requests share `background`."""
        return min(seq.num_pending, budget, background if seq.background else budget)

    def _has_foreground(self) -> bool:
        """Whether any request someone waits on is running or waiting."""
        return any(not s.background for s in self.running) or any(
            not s.background for s in self.waiting
        )

    def _yields(self, seq: Sequence, busy: bool) -> bool:
        """A background request's prompt waits while others run, up to a limit."""
        return seq.background and busy and time.monotonic() - seq.queued_at < BACKGROUND_MAX_WAIT_S

    def _next_waiting(self, busy: bool, background_room: bool) -> Sequence | None:
        """The first waiting request that may start: others before background ones, and
        background ones only while this step has room for their prompt tokens."""
        ready = [s for s in self.waiting if not self._yields(s, busy)]
        if not background_room:
            ready = [s for s in ready if not s.background]
        return next((s for s in ready if not s.background), ready[0] if ready else None)

    def finish(self, seq: Sequence) -> None:
        """Take a finished or aborted sequence out and free its blocks at once."""
        seq.status = Status.FINISHED
        if seq in self.running:
            self.running.remove(seq)
            self._release(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def _admit(self, seq: Sequence) -> None:
        self.blocks.allocate(seq)
        if self.blocks.is_hybrid:
            seq.state_slot = self.free_state_slots.pop()
        seq.status = Status.RUNNING
        self.running.append(seq)

    def _make_room(self, seq: Sequence) -> bool:
        """Find a KV slot for a decoding sequence, preempting the newest others if needed."""
        while not self.blocks.append_slot(seq):
            victim = max(self.running, key=lambda s: s.arrival)
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _reserve_lookahead(self, seq: Sequence, budget: int) -> int:
        """Slots for draft tokens after a decoding sequence's pending one, without preempting."""
        if not self.num_lookahead or seq.matcher is not None:  # a grammar masks token by token
            return 0
        # drafts past max_tokens or the context could never be kept
        limit = min(self.num_lookahead, budget, seq.params.max_tokens - seq.num_output_tokens - 1)
        if self.max_model_len is not None:
            limit = min(limit, self.max_model_len - len(seq))
        return self.blocks.reserve_slots(seq, limit) if limit > 0 else 0

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _release(self, seq: Sequence) -> None:
        self.blocks.release(seq)
        if seq.state_slot:
            self.free_state_slots.append(seq.state_slot)
            seq.state_slot = 0

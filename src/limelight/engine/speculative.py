"""Speculative decoding: draft tokens cheaply, verify them all in one pass of the target.

A decoding sequence normally computes one token per step.  With speculation the scheduler
reserves KV slots for up to k more, a proposer fills them with draft tokens, and the
target computes the pending token and the drafts together: its logits at each of those
positions are what it would have predicted had the drafts been real.  Verification keeps
the longest prefix of drafts the target agrees with, plus one token of the target's own.

Two proposers, both deterministic (their distribution q is a point mass):

- `NgramProposer`, prompt lookup: the tokens that followed the latest earlier occurrence of
  the context's last n tokens (n = 3, then 2, then 1).  Free, and strong wherever the
  output quotes its input.
- `DraftModelProposer`: a small `CausalLM` sharing the target's tokenizer, greedy for k
  single-token passes.  Its KV cache mirrors the target's slot for slot (same slot count,
  same block tables), and it runs on every batch the target runs, so it has KV wherever
  the target has: prefix-cache hits, chunked prefill and recomputed preempted prompts come
  for free, with no block manager of its own.

The verification math is lossless.  With a point-mass draft x, drawing the target token t
from p exactly as the sampler would and accepting iff t == x accepts with probability p(x)
and, on rejection, yields p with x removed and renormalised: the rule of Leviathan et al.
(2023) for q = δ(x).  Greedy requests are the same rule with argmax for the draw, so
speculative and plain greedy outputs are identical; seeded requests draw the same noise in
the same order, so their outputs are identical too.  `accept_with_draft_probs` is the
general rule for a sampled draft distribution q, min(1, p/q) then a draw from
normalize(max(0, p − q)); it is what a sampling draft would use.

p is the processed distribution (penalties over the context including the accepted
drafts, then temperature, top-k, top-p, min-p), built with the sampler's own functions.
Logprobs are those of the target's raw logits at each kept token's position.

This module proposes and verifies; it decides nothing about scheduling (the scheduler
sizes each sequence's lookahead) and keeps no request state.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor

from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.models import CausalLM
from limelight.engine.sampler import (
    apply_penalties,
    argmax_rows,
    filtered_probs,
    sample,
    token_logprobs,
)
from limelight.engine.scheduler import ScheduledSeq
from limelight.engine.sequence import Sequence
from limelight.engine.types import EngineConfig, TokenLogprob

logger = logging.getLogger(__name__)

Tokens = list[list[int]]  # per sampling sequence: the step's new tokens
Logprobs = list[list[TokenLogprob | None]]  # per sampling sequence: one per new token


class Proposer(Protocol):
    def propose(self, scheduled: list[ScheduledSeq]) -> None:
        """Give each item with `num_lookahead` slots up to that many draft tokens."""
        ...


def make_proposer(
    config: EngineConfig, model: CausalLM, draft: CausalLM | None, num_blocks: int
) -> Proposer | None:
    """The proposer `config.speculative` asks for, or None when speculation is off."""
    if config.speculative is None:
        return None
    if model.has_linear_attention:
        # a linear-attention state has no per-token history to roll rejected drafts back
        logger.warning("speculative decoding is off: this model keeps linear-attention state")
        return None
    if config.speculative == "ngram":
        return NgramProposer()
    if draft is None:
        raise ValueError(
            f"engine config: speculative={config.speculative!r} names a draft model; "
            "load it with `LLM(..., speculative=...)` or pass `draft_model` to LLMEngine"
        )
    return DraftModelProposer(draft, config, num_blocks, model.config.vocab_size)


def ngram_drafts(
    token_ids: list[int], num_tokens: int, max_n: int = 3, min_n: int = 1
) -> list[int]:
    """Up to `num_tokens` tokens that followed the latest earlier occurrence of the last n
    tokens, for the largest n <= max_n that occurs (and n >= min_n)."""
    end = len(token_ids)
    best_n, best_end = 0, -1
    for i in range(end - 2, -1, -1):  # latest first: i is where an earlier match ends
        if token_ids[i] != token_ids[-1]:
            continue
        n = 1
        while n < max_n and i - n >= 0 and token_ids[i - n] == token_ids[end - 1 - n]:
            n += 1
        if n > best_n:
            best_n, best_end = n, i
            if n == max_n:
                break
    if best_n < min_n:
        return []
    return token_ids[best_end + 1 : best_end + 1 + num_tokens]


class NgramProposer:
    """Prompt lookup: drafts copied from the sequence's own prompt and output."""

    def __init__(self, max_n: int = 3, min_n: int = 1) -> None:
        self.max_n, self.min_n = max_n, min_n

    def propose(self, scheduled: list[ScheduledSeq]) -> None:
        for item in scheduled:
            if item.num_lookahead:
                ids, n = item.seq.token_ids, item.num_lookahead
                item.add_drafts(ngram_drafts(ids, n, self.max_n, self.min_n))


class DraftModelProposer:
    """A small model drafting greedily over a KV cache that mirrors the target's."""

    def __init__(
        self, model: CausalLM, config: EngineConfig, num_blocks: int, vocab_size: int
    ) -> None:
        if model.has_linear_attention:
            raise ValueError("a draft model with linear attention cannot roll back its state")
        self.model = model
        self.block_size = config.block_size
        self.device = torch.device(config.device)
        self.vocab_size = min(vocab_size, model.config.vocab_size)  # drafts the target can take
        model.allocate_caches(num_blocks * config.block_size, 1, 0, getattr(torch, config.dtype))

    @torch.inference_mode()
    def mirror(self, input_ids: Tensor, batch: ForwardBatch) -> None:
        """Run the target's batch, so the draft has KV wherever the target has."""
        # a target vocabulary padded wider than the draft's has ids the draft cannot embed
        self.model(input_ids.clamp(max=self.model.config.vocab_size - 1), batch)

    @torch.inference_mode()
    def propose(self, scheduled: list[ScheduledSeq]) -> None:
        items = [item for item in scheduled if item.num_lookahead]
        drafts: Tokens = [[] for _ in items]
        last = [item.seq.token_ids[-1] for item in items]  # the pending token
        for step in range(max((item.num_lookahead for item in items), default=0)):
            active = [i for i, item in enumerate(items) if step < item.num_lookahead]
            slices = [self._slice(items[i].seq, step) for i in active]
            batch = ForwardBatch.build(slices, self.block_size, self.device)
            ids = torch.tensor([last[i] for i in active], device=self.device)
            logits = self.model.compute_logits(self.model(ids, batch))  # [B, V]
            tokens = argmax_rows(logits[:, : self.vocab_size]).tolist()
            for i, token in zip(active, tokens, strict=True):
                drafts[i].append(token)
                last[i] = token
        for item, draft in zip(items, drafts, strict=True):
            item.add_drafts(draft)

    def _slice(self, seq: Sequence, step: int) -> SequenceSlice:
        # the draft's KV for its own tokens goes to the lookahead slots the verify pass rewrites
        assert seq.num_pending == 1
        return SequenceSlice(start=seq.num_computed + step, num_new=1, block_table=seq.block_table)


def sample_and_verify(logits: Tensor, items: list[ScheduledSeq]) -> tuple[Tokens, Logprobs]:
    """logits [R, V]: 1 + len(draft_ids) rows per sampling item → each item's new tokens.

    Items without drafts go through the sampler in one batch, exactly as without speculation.
    """
    seqs = [item.seq for item in items]
    if not any(item.draft_ids for item in items):
        tokens, logprobs = sample(logits, seqs)
        return [[t] for t in tokens], [[lp] for lp in logprobs]
    starts, rows = [], 0
    for item in items:
        starts.append(rows)
        rows += 1 + len(item.draft_ids)
    out_tokens: Tokens = [[] for _ in items]
    out_logprobs: Logprobs = [[] for _ in items]
    plain = [i for i, item in enumerate(items) if not item.draft_ids]
    if plain:
        tokens, logprobs = sample(logits[[starts[i] for i in plain]], [seqs[i] for i in plain])
        for i, token, logprob in zip(plain, tokens, logprobs, strict=True):
            out_tokens[i], out_logprobs[i] = [token], [logprob]
    drafted = [i for i, item in enumerate(items) if item.draft_ids]
    index = [r for i in drafted for r in range(starts[i], starts[i] + 1 + len(items[i].draft_ids))]
    tokens_v, logprobs_v = verify(
        logits[index], [seqs[i] for i in drafted], [items[i].draft_ids for i in drafted]
    )
    for i, token_list, logprob_list in zip(drafted, tokens_v, logprobs_v, strict=True):
        out_tokens[i], out_logprobs[i] = token_list, logprob_list
    return out_tokens, out_logprobs


def verify(logits: Tensor, seqs: list[Sequence], drafts: Tokens) -> tuple[Tokens, Logprobs]:
    """logits [R, V] float32, 1 + len(draft) consecutive rows per sequence: the target's
    predictions after its pending token and after each draft → accepted drafts + one token."""
    if any(s.params.has_penalties for s in seqs):
        contexts = [_as_if_accepted(s, d[:j]) for s, d in zip(seqs, drafts, strict=True)
                    for j in range(len(d) + 1)]  # fmt: skip
        processed = apply_penalties(logits.clone(), contexts)
    else:
        contexts = [s for s, d in zip(seqs, drafts, strict=True) for _ in range(len(d) + 1)]
        processed = logits
    greedy = argmax_rows(processed).tolist()  # [R]
    random_rows = [r for r, c in enumerate(contexts) if not c.params.is_greedy]
    prob_of_row = {}
    if random_rows:
        probs = filtered_probs(processed[random_rows], [contexts[r] for r in random_rows])
        prob_of_row = {r: probs[k] for k, r in enumerate(random_rows)}
    tokens: Tokens = []
    logprobs: Logprobs = []
    start = 0
    for seq, draft in zip(seqs, drafts, strict=True):
        assert seq.matcher is None, "the scheduler gives constrained requests no drafts"
        rows = range(start, start + len(draft) + 1)
        if seq.params.is_greedy:
            targets: Iterator[int] = iter([greedy[r] for r in rows])
        else:
            targets = _draws([prob_of_row[r] for r in rows], seq.generator)
        kept = accept_prefix(draft, targets)
        tokens.append(kept)
        end = start + len(kept)
        logprobs.append(token_logprobs(logits[start:end], kept, contexts[start:end]))
        start += len(draft) + 1
    return tokens, logprobs


def accept_prefix(draft: list[int], targets: Iterator[int]) -> list[int]:
    """Point-mass drafts: take the target's token at each position (drawn lazily, so a
    seeded generator advances once per kept token) and stop at the first that differs
    from the draft; when every draft is taken the next target token is the bonus."""
    kept = []
    for proposed in [*draft, None]:
        token = next(targets)
        kept.append(token)
        if token != proposed:
            break
    return kept


def accept_with_draft_probs(
    p: Tensor, q: Tensor, draft: list[int], generator: torch.Generator | None = None
) -> list[int]:
    """The general rule: p [n+1, V] target and q [n, V] draft probabilities, the n draft
    tokens drawn from q → accepted drafts + one token, distributed exactly as p."""
    kept = []
    for j, x in enumerate(draft):
        u = float(torch.rand((), generator=generator))
        if u * float(q[j, x]) < float(p[j, x]):  # accept with probability min(1, p(x) / q(x))
            kept.append(x)
            continue
        residual = (p[j] - q[j]).clamp(min=0)  # where the target wants more than the draft gave
        kept.append(int(torch.multinomial(residual / residual.sum(), 1, generator=generator)))
        return kept
    kept.append(int(torch.multinomial(p[-1], 1, generator=generator)))  # all accepted: bonus
    return kept


def _draws(probs: list[Tensor], generator: torch.Generator | None) -> Iterator[int]:
    """The sampler's exponential race, one row at a time, with the request's own noise."""
    for row in probs:
        noise = torch.empty(row.shape[-1]).exponential_(generator=generator).to(row.device)
        yield int((row / noise).argmax())


def _as_if_accepted(seq: Sequence, accepted: list[int]) -> Sequence:
    """A shallow copy of the sequence as if `accepted` were already in its output (for the
    penalties, which look at the context a position sees)."""
    view = copy.copy(seq)
    view.token_ids = seq.token_ids + accepted
    return view

"""`LLMEngine`: requests in, one step at a time, streamed deltas out.

Orchestration only: `step()` asks the scheduler what to run, the model runner runs it,
and `_postprocess` appends the sampled tokens, detokenizes and decides which requests are
finished.  With speculative decoding a proposer adds draft tokens between scheduling and
running, and a step may append several tokens to a request, one at a time.  It is
synchronous and single-threaded; `AsyncEngine` drives it for many concurrent streams,
`LLM` for batch generation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from limelight.engine.block_manager import BlockManager
from limelight.engine.detokenizer import IncrementalDetokenizer
from limelight.engine.errors import RequestError
from limelight.engine.model_runner import ModelRunner, kv_bytes_per_token
from limelight.engine.models import CausalLM
from limelight.engine.scheduler import ScheduledSeq, Scheduler
from limelight.engine.sequence import Sequence
from limelight.engine.speculative import DraftModelProposer, Logprobs, Tokens, make_proposer
from limelight.engine.structured import GrammarCompiler
from limelight.engine.types import (
    EngineConfig,
    FinishReason,
    RequestOutput,
    SamplingParams,
    StreamDelta,
    TokenLogprob,
)


class TokenizerLike(Protocol):
    eos_token_ids: list[int]

    def encode_prompt(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


@dataclass(slots=True)
class EngineStats:
    num_computed_tokens: int = 0  # tokens run through the model (prefill and decode)
    num_generated_tokens: int = 0
    num_steps: int = 0
    num_preemptions: int = 0
    num_prefix_lookup_tokens: int = 0  # tokens of admitted sequences looked up in the cache
    num_prefix_hit_tokens: int = 0  # of those, served from the cache
    num_draft_tokens: int = 0  # speculative decoding: draft tokens verified
    num_accepted_tokens: int = 0  # of those, accepted by the target

    @property
    def prefix_hit_rate(self) -> float:
        return self.num_prefix_hit_tokens / max(self.num_prefix_lookup_tokens, 1)

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / max(self.num_draft_tokens, 1)


@dataclass(eq=False)
class _Request:
    seq: Sequence
    detokenizer: IncrementalDetokenizer
    deltas: list[TokenLogprob] = field(default_factory=list)


class LLMEngine:
    def __init__(
        self,
        model: CausalLM,
        tokenizer: TokenizerLike,
        config: EngineConfig,
        draft_model: CausalLM | None = None,  # for `config.speculative` naming a draft model
    ) -> None:
        self.tokenizer = tokenizer
        self.config = config
        per_block = kv_bytes_per_token(model, getattr(torch, config.dtype))
        num_blocks = config.num_kv_blocks or max(
            2, config.kv_cache_bytes // (per_block * config.block_size)
        )
        self.max_model_len = min(
            config.max_model_len or model.config.max_position_embeddings,
            num_blocks * config.block_size,
        )
        self.vocab_size = model.config.vocab_size
        self.proposer = make_proposer(config, model, draft_model, num_blocks)
        draft = self.proposer if isinstance(self.proposer, DraftModelProposer) else None
        self.runner = ModelRunner(model, config, num_blocks, draft)
        num_snapshots = config.num_state_snapshots if model.has_linear_attention else 0
        self.block_manager = BlockManager(
            num_blocks, config.block_size, config.enable_prefix_caching, num_snapshots
        )
        num_lookahead = config.num_speculative_tokens if self.proposer else 0
        self.scheduler = Scheduler(config, self.block_manager, num_lookahead, self.max_model_len)
        self.grammars = GrammarCompiler(tokenizer, self.vocab_size)  # constraints → matchers
        self.requests: dict[str, _Request] = {}
        self._stats = EngineStats()
        self._ids = itertools.count()

    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        background: bool = False,
    ) -> str:
        """Queue a request; a `background` one (nobody waits on it, as memory work) has its
        prompt computed only when no other request needs the step (see scheduler.py)."""
        token_ids = self.prompt_ids(prompt)
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise RequestError(f"request id {request_id!r} is already in use")
        seq = Sequence(request_id, token_ids, params, next(self._ids), background)
        if params.constraint is not None:  # compiled here, so a bad one never fails a step
            seq.matcher = self.grammars.matcher(params.constraint)
        detok = IncrementalDetokenizer(self.tokenizer, params.stop, params.skip_special_tokens)
        self.requests[request_id] = _Request(seq, detok)
        self.scheduler.add(seq)
        return request_id

    def abort(self, request_id: str) -> None:
        """Stop a request now and free its KV blocks; unknown ids are ignored."""
        request = self.requests.pop(request_id, None)
        if request is not None:
            self.scheduler.finish(request.seq)

    @property
    def stats(self) -> EngineStats:
        """Counters since the engine started (a copy)."""
        blocks = self.block_manager
        return replace(
            self._stats,
            num_preemptions=self.scheduler.num_preemptions,
            num_prefix_lookup_tokens=blocks.num_lookup_tokens,
            num_prefix_hit_tokens=blocks.num_hit_tokens,
        )

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_work

    def step(self) -> list[StreamDelta]:
        scheduled = self.scheduler.schedule()
        if not scheduled:
            return []
        if self.proposer is not None:
            self.proposer.propose(scheduled)  # draft tokens to verify after the pending ones
        tokens, logprobs = self.runner.run(scheduled)
        self._stats.num_steps += 1
        return self._postprocess(scheduled, tokens, logprobs)

    def prompt_ids(self, prompt: str | list[int]) -> list[int]:
        """Tokenize and validate a prompt; raises `RequestError` with the reason."""
        token_ids = (
            self.tokenizer.encode_prompt(prompt) if isinstance(prompt, str) else list(prompt)
        )
        if not token_ids:
            raise RequestError("the prompt is empty")
        if any(not 0 <= t < self.vocab_size for t in token_ids):
            raise RequestError(f"prompt token ids must be in [0, {self.vocab_size})")
        if len(token_ids) >= self.max_model_len:
            raise RequestError(
                f"the prompt has {len(token_ids)} tokens; this model's context holds "
                f"{self.max_model_len}, including at least one new token"
            )
        return token_ids

    def _postprocess(
        self, scheduled: list[ScheduledSeq], tokens: Tokens, logprobs: Logprobs
    ) -> list[StreamDelta]:
        deltas = []
        sampled = iter(zip(tokens, logprobs, strict=True))
        for item in scheduled:
            seq = item.seq
            seq.num_computed += item.num_new - len(item.draft_ids)  # drafts count once kept
            self._stats.num_computed_tokens += item.num_new
            self.block_manager.commit(seq)
            if item.samples:
                deltas.append(self._append_tokens(seq, len(item.draft_ids), *next(sampled)))
        return deltas

    def _append_tokens(
        self,
        seq: Sequence,
        num_drafts: int,
        tokens: list[int],
        logprobs: list[TokenLogprob | None],
    ) -> StreamDelta:
        """Append a step's tokens one at a time, so that a stop condition cuts exactly where
        it would without speculation; all but the last are accepted drafts, already computed."""
        self._stats.num_draft_tokens += num_drafts
        self._stats.num_accepted_tokens += len(tokens) - 1
        deltas = []
        for i, (token, logprob) in enumerate(zip(tokens, logprobs, strict=True)):
            deltas.append(self._append_token(seq, token, logprob))
            if seq.is_finished:
                break
            if i < len(tokens) - 1:
                seq.num_computed += 1
        if len(tokens) > 1 and not seq.is_finished:
            self.block_manager.commit(seq)  # blocks that the accepted drafts completed
        return deltas[0] if len(deltas) == 1 else _merged(deltas)

    def _append_token(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> StreamDelta:
        seq.token_ids.append(token)
        if seq.matcher is not None:
            seq.matcher.advance(token)
        self._stats.num_generated_tokens += 1
        if logprob is not None:
            seq.logprobs.append(logprob)
        reason = self._finish_reason(seq, token)
        request = self.requests[seq.request_id]
        text = request.detokenizer.add([token], final=reason is not None)
        if request.detokenizer.stopped:
            reason = "stop"
        if reason is not None:
            seq.finish_reason = reason
            self.scheduler.finish(seq)
        return StreamDelta(
            seq.request_id,
            [token],
            text,
            reason,
            [logprob] if logprob is not None else [],
            seq.num_cached_prompt_tokens,
        )

    def _finish_reason(self, seq: Sequence, token: int) -> FinishReason | None:
        params = seq.params
        if seq.matcher is not None and seq.matcher.is_done:  # only EOS could follow
            return "abort" if seq.matcher.error else "stop"
        if token in params.stop_token_ids or (
            not params.ignore_eos and token in self.tokenizer.eos_token_ids
        ):
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or len(seq) >= self.max_model_len:
            return "length"
        return None

    def pop_output(self, request_id: str) -> RequestOutput:
        """The finished request's whole output; it is forgotten afterwards."""
        request = self.requests.pop(request_id)
        seq = request.seq
        assert seq.finish_reason is not None, "request not finished"
        return RequestOutput(
            request_id=request_id,
            prompt_token_ids=seq.token_ids[: seq.num_prompt_tokens],
            token_ids=seq.output_ids,
            text=request.detokenizer.output_text,
            finish_reason=seq.finish_reason,
            num_cached_tokens=seq.num_cached_prompt_tokens,
            logprobs=seq.logprobs,
        )


def _merged(deltas: list[StreamDelta]) -> StreamDelta:
    """One request's deltas of one step as a single delta."""
    last = deltas[-1]
    return StreamDelta(
        last.request_id,
        [t for d in deltas for t in d.token_ids],
        "".join(d.text for d in deltas),
        last.finish_reason,
        [lp for d in deltas for lp in d.logprobs],
        last.num_cached_tokens,
    )

"""Grammar-constrained decoding: a request's `Constraint` → the tokens it may sample next.

`GrammarCompiler` (one per engine) compiles a constraint against the engine's tokenizer
and hands out a `GrammarMatcher` per constrained sequence, which follows its output token
by token; `mask_logits` sets -inf on the tokens each constrained row's grammar forbids,
from one bitmask per step that llguidance fills for all the constrained rows at once.

The grammar machinery is llguidance's (JSON Schema, regex, Lark and GBNF grammars, over a
token trie, in Rust); this module only adapts it to the engine: llguidance's tokenizer
built from ours, compiled grammars cached, compile errors turned into `RequestError`
before a request is queued, and the bitmask applied to a batch of logits.  It decides
nothing about scheduling, sampling order or when a request finishes.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol

import llguidance
import numpy as np
import tokenizers
import torch
from torch import Tensor

from limelight.engine.errors import RequestError
from limelight.engine.types import Constraint

logger = logging.getLogger(__name__)

# JSON as models write it (`{"a": 1, "b": [2, 3]}`); free whitespace lets a small model
# loop on newlines.  A schema's own "x-guidance" options override these.
_JSON_OPTIONS: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class TokenizerLike(Protocol):
    @property
    def eos_token_ids(self) -> list[int]: ...


class GrammarMatcher:
    """One sequence's place in its grammar: what may come next, and whether it is done."""

    __slots__ = ("_matcher", "vocab_size")

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self.vocab_size = vocab_size  # llguidance's, >= the model's logit width

    def advance(self, token: int) -> None:
        """Consume a sampled token (EOS included); a rejected one leaves `error` set."""
        if not self._matcher.consume_token(token):
            logger.warning("constrained decoding failed: %s", self._matcher.get_error())

    @property
    def is_done(self) -> bool:
        """Nothing but EOS may follow: the grammar is complete, or the matcher failed."""
        return bool(self._matcher.is_stopped())

    @property
    def error(self) -> str:
        """Why the matcher failed; empty while it has not."""
        return str(self._matcher.get_error())


class GrammarCompiler:
    """Constraints → matchers for one tokenizer; the same constraint compiles once."""

    def __init__(self, tokenizer: TokenizerLike, vocab_size: int, cache_size: int = 64) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size  # the model's logit width
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], llguidance.LLMatcher] = OrderedDict()
        self._lltokenizer: llguidance.LLTokenizer | None = None

    def matcher(self, constraint: Constraint) -> GrammarMatcher:
        """A fresh matcher; raises `RequestError` when the constraint does not compile."""
        key = _cache_key(constraint)
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._compile(constraint)
            self._cache[key] = compiled
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return GrammarMatcher(compiled.deep_copy(), self.lltokenizer.vocab_size)

    @property
    def lltokenizer(self) -> llguidance.LLTokenizer:
        """llguidance's view of the tokenizer, built on first use (about half a second)."""
        if self._lltokenizer is None:
            self._lltokenizer = build_lltokenizer(self._tokenizer, self._vocab_size)
        return self._lltokenizer

    def _compile(self, constraint: Constraint) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(self.lltokenizer, grammar_text(constraint), log_level=0)
        if matcher.is_error():
            raise RequestError(
                f"the {constraint.kind} constraint does not compile: {matcher.get_error()}"
            )
        return matcher


def grammar_text(constraint: Constraint) -> str:
    """The llguidance grammar for a constraint (checked only when a matcher is built)."""
    kind, value = constraint.kind, constraint.value
    try:
        if kind in ("json_schema", "json_object"):
            schema = {"type": "object"} if value is None else value
            return str(llguidance.LLMatcher.grammar_from_json_schema(schema, _JSON_OPTIONS))
        assert isinstance(value, str)
        if kind == "regex":
            return str(llguidance.LLMatcher.grammar_from_regex(value))
        return llguidance.grammar_from("grammar", value)  # Lark, or GBNF converted to Lark
    except ValueError as err:
        raise RequestError(f"the {kind} constraint does not compile: {err}") from err


def build_lltokenizer(tokenizer: TokenizerLike, vocab_size: int) -> llguidance.LLTokenizer:
    """llguidance's tokenizer from ours: the same `tokenizers` JSON, our EOS ids, and a
    vocabulary at least as wide as the model's logits (ids past the tokenizer never match)."""
    backend = getattr(tokenizer, "backend", None)
    if not isinstance(backend, tokenizers.Tokenizer):
        raise RequestError(
            "constrained decoding needs a tokenizer built on the `tokenizers` library; "
            f"this engine's is a {type(tokenizer).__name__}"
        )
    backend = copy.copy(backend)
    backend.no_padding()
    backend.no_truncation()
    num_tokens = max(vocab_size, backend.get_vocab_size(with_added_tokens=True))
    try:
        return llguidance.LLTokenizer(
            backend.to_str(), n_vocab=num_tokens, eos_token=list(tokenizer.eos_token_ids) or None
        )
    except Exception as err:  # the Rust side raises bare exceptions
        raise RequestError(f"constrained decoding cannot use this tokenizer: {err}") from err


def mask_logits(logits: Tensor, matchers: Sequence[GrammarMatcher | None]) -> Tensor:
    """logits [N, V], a matcher or None per row → a copy with -inf on the tokens the
    constrained rows may not sample next; `logits` itself when no row is constrained."""
    rows = [row for row, m in enumerate(matchers) if m is not None]
    if not rows:
        return logits
    bitmask = allowed_bitmask([m for m in matchers if m is not None])  # [n, W]
    forbidden = forbidden_tokens(bitmask, logits.shape[-1], logits.device)  # [n, V]
    if len(rows) == len(matchers):
        return torch.where(forbidden, float("-inf"), logits)
    index = torch.tensor(rows, device=logits.device)
    masked = logits.clone()
    masked[index] = torch.where(forbidden, float("-inf"), logits[index])
    return masked


def allowed_bitmask(matchers: Sequence[GrammarMatcher]) -> Tensor:
    """int32 [n, ceil(V/32)]: bit t % 32 of word t // 32 of row i is set when matcher i
    allows token t next.  llguidance fills the rows in parallel on its own threads (what
    `llguidance.torch.fill_next_token_bitmask_par` does, without importing that module: it
    pulls in `torch._dynamo`, seconds at import, for helpers unused here)."""
    assert len({m.vocab_size for m in matchers}) == 1, "matchers of different tokenizers"
    num_words = (matchers[0].vocab_size + 31) // 32
    bitmask = torch.zeros((len(matchers), num_words), dtype=torch.int32)
    rows = [(m._matcher, row) for row, m in enumerate(matchers)]
    _executor().unsafe_compute_mask_ptr(rows, bitmask.data_ptr(), num_words * 4, len(rows))
    return bitmask


@cache
def _executor() -> llguidance.LLExecutor:
    return llguidance.LLExecutor()


def forbidden_tokens(bitmask: Tensor, width: int, device: torch.device) -> Tensor:
    """int32 [n, W] → bool [n, width] on `device`: token t is forbidden when bit t % 32 of
    word t // 32 is clear."""
    assert bitmask.shape[1] * 32 >= width, "the grammar's vocabulary is narrower than the logits"
    if device.type == "cpu":  # numpy unpacks bits in one pass; torch's shifts are ~100x slower
        return unpack_forbidden_numpy(bitmask, width)
    return unpack_forbidden_torch(bitmask.to(device), width)  # 32x less to copy than bools


def unpack_forbidden_numpy(bitmask: Tensor, width: int) -> Tensor:
    words = (~bitmask).numpy().astype("<i4", copy=False)
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")  # [n, 32 W]
    return torch.from_numpy(bits[:, :width]).view(torch.bool)


def unpack_forbidden_torch(bitmask: Tensor, width: int) -> Tensor:
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    allowed = (bitmask.unsqueeze(-1) >> shifts) & 1  # [n, W, 32]
    return allowed.flatten(1)[:, :width] == 0


def _cache_key(constraint: Constraint) -> tuple[str, str]:
    """Equal keys compile to the same grammar: a schema as dict or text, in any key order."""
    value = constraint.value
    if constraint.kind == "json_schema":
        schema = json.loads(value) if isinstance(value, str) else value
        return constraint.kind, json.dumps(schema, sort_keys=True)
    return constraint.kind, value if isinstance(value, str) else ""

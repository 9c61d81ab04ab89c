"""The engine's boundary: what callers pass in and get back.

Everything above the engine (chat, memory, server) talks to it through these dataclasses:
`SamplingParams` per request (with an optional output `Constraint`), `EngineConfig` per
engine, `RequestOutput` for a finished request and `StreamDelta` for each streamed piece.
Token ids in, token ids (and text decoded by the engine's tokenizer) out; nothing here
knows about characters or HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from limelight.engine.errors import RequestError

FinishReason = Literal["stop", "length", "abort"]
ConstraintKind = Literal["json_schema", "regex", "grammar", "json_object"]


@dataclass(frozen=True, slots=True)
class Constraint:
    """What a request's whole output must match; `engine/structured.py` enforces it.

    `json_schema`: a JSON Schema (dict or JSON text); `regex`: a regular expression the
    whole output matches; `grammar`: a Lark (or llama.cpp GBNF) grammar; `json_object`:
    any JSON object.  Build one with the constructors, e.g. `Constraint.regex("[0-9]+")`.
    """

    kind: ConstraintKind
    value: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(ConstraintKind):
            raise RequestError(
                f"unknown constraint kind {self.kind!r}; use one of {get_args(ConstraintKind)}"
            )
        if self.kind == "json_object":
            if self.value is not None:
                raise RequestError("a json_object constraint takes no value")
        elif self.kind == "json_schema":
            schema = _parse_json(self.value) if isinstance(self.value, str) else self.value
            if not isinstance(schema, dict):
                raise RequestError("a json_schema constraint needs a JSON object (dict or text)")
        elif not (isinstance(self.value, str) and self.value):
            raise RequestError(f"a {self.kind} constraint needs a non-empty string")

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str) -> Constraint:
        return cls("json_schema", schema)

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        return cls("regex", pattern)

    @classmethod
    def grammar(cls, text: str) -> Constraint:
        return cls("grammar", text)

    @classmethod
    def json_object(cls) -> Constraint:
        return cls("json_object")


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(f"the JSON schema is not valid JSON: {err}") from err


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 disables
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in prompt or output
    presence_penalty: float = 0.0  # OpenAI-style, over the output so far
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; 0: the sampled token's; n: also the top n
    skip_special_tokens: bool = True
    constraint: Constraint | None = None  # the output must match it (structured output)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.max_tokens >= 1, "max_tokens must be >= 1"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in [0, 20]"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty"),
            (
                self.constraint is None or isinstance(self.constraint, Constraint),
                "constraint must be a Constraint, e.g. Constraint.json_schema(schema)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise RequestError(f"invalid sampling parameters: {message}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0

    @property
    def has_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


QUANTIZATION_BITS = {"int8": 8, "int4": 4}  # EngineConfig.quantization → weight bits


@dataclass(slots=True)
class EngineConfig:
    max_num_seqs: int = 32  # sequences in one running batch
    max_num_batched_tokens: int = 512  # tokens in one step; longer prompts are chunked
    block_size: int = 16  # tokens per KV block
    kv_cache_bytes: int = 512 << 20  # KV memory when num_kv_blocks is not given
    num_kv_blocks: int | None = None
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    num_state_snapshots: int = 64  # hybrid models: saved linear-attention states for reuse
    dtype: str = "float32"
    device: str = "cpu"
    quantization: str | None = None  # "int8" or "int4": weight-only (needs bfloat16)
    speculative: str | None = None  # "ngram" (prompt lookup) or a draft model's name or path
    num_speculative_tokens: int = 4  # most draft tokens verified per sequence and step
    compile: bool = False  # decode and prompt steps through torch.compile on the CPU

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1 or self.block_size < 1:
            raise ValueError("engine config: sizes must be positive")
        if self.num_speculative_tokens < 1:
            raise ValueError("engine config: num_speculative_tokens must be at least 1")
        if self.speculative == "":
            raise ValueError("engine config: speculative is 'ngram', a draft model, or None")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 2:
            raise ValueError("engine config: num_kv_blocks must be at least 2")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"engine config: unsupported dtype {self.dtype!r}")
        if self.quantization not in (None, *QUANTIZATION_BITS):
            raise ValueError(
                f"engine config: quantization is 'int8', 'int4' or None, not {self.quantization!r}"
            )
        if self.quantization is not None and self.dtype != "bfloat16":
            raise ValueError(
                f"engine config: quantization={self.quantization!r} runs with dtype='bfloat16'"
            )


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), best first


@dataclass(slots=True)
class StreamDelta:
    """One step's new output of a request; the last one has `finish_reason` set."""

    request_id: str
    token_ids: list[int]
    text: str
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]  # new tokens only
    text: str
    finish_reason: FinishReason
    num_cached_tokens: int  # prompt tokens served from the prefix cache
    logprobs: list[TokenLogprob] = field(default_factory=list)

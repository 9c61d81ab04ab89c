"""`LLM`: the engine as a library call, `llm.generate(prompts, params)`.

Loads a checkpoint (packaged name, `.gguf` file or Hugging Face folder), builds the model
and the engine, and runs requests to completion.  For streaming and concurrency use
`AsyncEngine`; both share `load_engine`, which also loads the draft model that
`speculative=` may name (a checkpoint with the same tokenizer as the target).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from limelight.engine.errors import CheckpointError
from limelight.engine.layers.dense import dense_linears
from limelight.engine.layers.quantized import quantize_linears
from limelight.engine.llm_engine import LLMEngine
from limelight.engine.loader import Checkpoint, open_checkpoint
from limelight.engine.models import CausalLM, model_class
from limelight.engine.models.llama import fuse_projections
from limelight.engine.tokenizer import Tokenizer
from limelight.engine.types import QUANTIZATION_BITS, EngineConfig, RequestOutput, SamplingParams

DEFAULT_MODEL = "smollm2-135m-instruct"


def load_model(checkpoint: Checkpoint, config: EngineConfig) -> CausalLM:
    dtype = getattr(torch, config.dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are made in the engine's dtype: no float32
    try:  # copy of the whole model ever lives in memory (peak RSS)
        model = model_class(checkpoint.config.model_type)(checkpoint.config)
    finally:
        torch.set_default_dtype(previous)
    model.load_weights(checkpoint.weights())
    model = model.to(device=config.device, dtype=dtype)
    fuse_projections(model)
    if config.quantization is not None:
        model.quant_switch = quantize_linears(model, bits=QUANTIZATION_BITS[config.quantization])
    dense_linears(model)  # rows that do not depend on each other (layers/dense.py)
    release_freed_memory()
    return model.eval()


def release_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's `malloc_trim`).  Loading
    allocates far more than it keeps (dequantized tensors, quantization temporaries); glibc
    holds on to the freed part, which counted as resident: SmolLM2 with int4 weights sat at
    975 MB after load and 625 MB after the trim; compiling its steps left 930 MB, 799 MB
    after a second trim.  Elsewhere this does nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


def engine_config(options: dict[str, Any]) -> EngineConfig:
    known = {f.name for f in dataclasses.fields(EngineConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown engine options {unknown}; known options: {sorted(known)}")
    return EngineConfig(**options)


def load_engine(model: str | Path, **options: Any) -> tuple[LLMEngine, Checkpoint]:
    config = engine_config(options)
    checkpoint = open_checkpoint(model)
    draft = load_draft_model(checkpoint, config)
    target = load_model(checkpoint, config)
    engine = LLMEngine(target, checkpoint.tokenizer, config, draft)
    release_freed_memory()  # and what compiling the steps left (engine/compiled.py)
    return engine, checkpoint


def load_draft_model(target: Checkpoint, config: EngineConfig) -> CausalLM | None:
    """The draft model `config.speculative` names, if it names one (not "ngram")."""
    if config.speculative in (None, "ngram"):
        return None
    checkpoint = open_checkpoint(config.speculative)
    vocab = checkpoint.tokenizer.backend.get_vocab(with_added_tokens=True)
    if vocab != target.tokenizer.backend.get_vocab(with_added_tokens=True):
        raise CheckpointError(
            f"the draft model {config.speculative!r} has another tokenizer than the target: "
            "pick a draft from the same family, or speculative='ngram'"
        )
    return load_model(checkpoint, config)


class LLM:
    def __init__(self, model: str | Path = DEFAULT_MODEL, **options: Any) -> None:
        self.engine, checkpoint = load_engine(model, **options)
        self.source = checkpoint.source  # the file or folder the weights came from
        self.tokenizer: Tokenizer = checkpoint.tokenizer

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, **kwargs
        )

    def generate(
        self,
        prompts: str | list[int] | Sequence[str | list[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Run every prompt to completion, batched; outputs in the order of the prompts."""
        batch = _as_batch(prompts)
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(batch)
        if len(params) != len(batch):
            raise ValueError(f"{len(batch)} prompts but {len(params)} sampling parameters")
        ids: list[str] = []
        try:
            for prompt, sp in zip(batch, params, strict=True):
                ids.append(self.engine.add_request(prompt, sp))
            while self.engine.has_unfinished:
                self.engine.step()
        except BaseException:
            for request_id in ids:  # a bad request or an interrupt leaves nothing queued
                self.engine.abort(request_id)
            raise
        return [self.engine.pop_output(i) for i in ids]


def _as_batch(prompts: str | list[int] | Sequence[str | list[int]]) -> list[str | list[int]]:
    """One prompt (text or token ids) or a sequence of them → a list of prompts."""
    if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
        return [prompts]  # type: ignore[list-item]
    return list(prompts)  # type: ignore[arg-type]

"""limelight: a self-hosted, vertically integrated stack for AI characters.

The public surface of the engine is re-exported here:

    from limelight import LLM, SamplingParams
    llm = LLM("smollm2-135m-instruct")
    outs = llm.generate(["Once upon a time"], SamplingParams(temperature=0, max_tokens=32))

Names load on first use, so importing one submodule does not load the whole engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LLM": "limelight.engine.llm",
    "AsyncEngine": "limelight.engine.async_engine",
    "CheckpointError": "limelight.engine.errors",
    "Constraint": "limelight.engine.types",
    "LimelightError": "limelight.engine.errors",
    "ModelNotFoundError": "limelight.engine.errors",
    "RequestError": "limelight.engine.errors",
    "EngineConfig": "limelight.engine.types",
    "RequestOutput": "limelight.engine.types",
    "SamplingParams": "limelight.engine.types",
    "StreamDelta": "limelight.engine.types",
    "TokenLogprob": "limelight.engine.types",
}

if TYPE_CHECKING:
    from limelight.engine.async_engine import AsyncEngine as AsyncEngine
    from limelight.engine.errors import (
        CheckpointError as CheckpointError,
    )
    from limelight.engine.errors import (
        LimelightError as LimelightError,
    )
    from limelight.engine.errors import (
        ModelNotFoundError as ModelNotFoundError,
    )
    from limelight.engine.errors import (
        RequestError as RequestError,
    )
    from limelight.engine.llm import LLM as LLM
    from limelight.engine.types import (
        Constraint as Constraint,
    )
    from limelight.engine.types import (
        EngineConfig as EngineConfig,
    )
    from limelight.engine.types import (
        RequestOutput as RequestOutput,
    )
    from limelight.engine.types import (
        SamplingParams as SamplingParams,
    )
    from limelight.engine.types import (
        StreamDelta as StreamDelta,
    )
    from limelight.engine.types import (
        TokenLogprob as TokenLogprob,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'limelight' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)

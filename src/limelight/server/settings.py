"""`Settings`: the server's configuration at the process edge (flags and LIMELIGHT_* env).

Builds the engine options and limits the rest of the server is handed; nothing below the
server reads the environment.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIMELIGHT_", extra="forbid")

    model: str = "smollm2-135m-instruct"  # packaged name, .gguf file or checkpoint folder
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    database_url: str | None = None  # default: limelight.db in the user's data directory
    kv_cache_bytes: int = 256 << 20
    max_model_len: int | None = 4096
    max_num_seqs: int = 32
    dtype: str = "bfloat16"
    quantization: str | None = "int4"  # weights for decoding (engine/layers/quantized.py)
    compile: bool = True  # decode and prompt steps through torch.compile (engine/compiled.py)
    max_body_bytes: int = 1 << 20  # JSON request bodies
    max_upload_bytes: int = 16 << 20  # character files
    max_tokens_default: int = 256  # a reply's length when the request does not say
    memory: bool = True  # derive and retrieve long-term memories
    memory_facts: bool = True  # extract facts with the model (kept only when grounded)
    memory_summaries: bool = False  # rolling summaries: worth it with a model above ~1B
    embedder: str | None = None  # default: the memory package's packaged embedder
    voice: bool = True  # speech out (Piper, espeak-ng) and in (Whisper tiny.en)
    tts_threads: int = Field(default=1, ge=1, le=64)  # per synthesis; the engine needs cores
    stt_threads: int = Field(default=2, ge=1, le=64)

    @property
    def engine_options(self) -> dict[str, object]:
        return {
            "kv_cache_bytes": self.kv_cache_bytes,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "compile": self.compile,
        }

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK

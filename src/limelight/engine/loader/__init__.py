"""Opening a model by name or path: `open_checkpoint(...)` → `Checkpoint`.

A packaged model name (`packaged.py`), a `.gguf` file (`gguf.py`) or a Hugging Face folder
of `config.json` + safetensors (`safetensors.py`) all give the same thing: the config, a
function yielding the weights under Hugging Face names, and the tokenizer.  Building the
model from them is the caller's job (`models.model_class`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from limelight.engine.errors import CheckpointError, ModelNotFoundError
from limelight.engine.loader.gguf import GGUFFile, iter_gguf_weights, read_gguf_config
from limelight.engine.loader.packaged import PACKAGED_MODELS, resolve_packaged
from limelight.engine.loader.safetensors import is_hf_folder, iter_safetensors, read_hf_config
from limelight.engine.models.config import ModelConfig
from limelight.engine.tokenizer import Tokenizer


@dataclass(frozen=True, slots=True)
class Checkpoint:
    config: ModelConfig
    weights: Callable[[], Iterator[tuple[str, Tensor]]]  # (HF name, tensor), one at a time
    tokenizer: Tokenizer
    source: Path


def open_checkpoint(name_or_path: str | Path) -> Checkpoint:
    """A packaged model name, a `.gguf` file, or a Hugging Face checkpoint folder."""
    if isinstance(name_or_path, str) and name_or_path.lower() in PACKAGED_MODELS:
        return open_packaged(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return open_gguf(path)
    if is_hf_folder(path):
        return open_hf_folder(path)
    if path.is_dir():
        return open_gguf(_single_gguf(path))
    raise ModelNotFoundError(
        f"{str(name_or_path)!r} is neither a packaged model ({', '.join(PACKAGED_MODELS)}) "
        "nor an existing .gguf file or Hugging Face checkpoint folder"
    )


def open_packaged(name: str) -> Checkpoint:
    model = resolve_packaged(name)
    checkpoint = open_gguf(model.path())
    if checkpoint.tokenizer.chat_template is None:
        checkpoint.tokenizer.chat_template = model.chat_template
    return checkpoint


def open_gguf(path: Path) -> Checkpoint:
    file = GGUFFile.open(path)
    config = read_gguf_config(file)
    try:
        tokenizer = Tokenizer.from_gguf(file.metadata)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    return Checkpoint(config, lambda: iter_gguf_weights(file, config), tokenizer, path)


def open_hf_folder(folder: Path) -> Checkpoint:
    config = read_hf_config(folder)
    tokenizer = Tokenizer.from_hf_folder(folder)
    return Checkpoint(config, lambda: iter_safetensors(folder), tokenizer, folder)


def _single_gguf(folder: Path) -> Path:
    files = sorted(folder.glob("*.gguf"))
    if len(files) != 1:
        found = f"{len(files)} .gguf files" if files else "no .gguf file"
        raise CheckpointError(
            f"{folder}: not a checkpoint folder (no config.json, and {found}); "
            "pass a .gguf file or a Hugging Face folder"
        )
    return files[0]


__all__ = [
    "PACKAGED_MODELS",
    "Checkpoint",
    "open_checkpoint",
    "open_gguf",
    "open_hf_folder",
    "open_packaged",
]

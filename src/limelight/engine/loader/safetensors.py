"""Hugging Face checkpoint folders: `config.json` plus one or many `*.safetensors` files.

Tensors are read lazily, one at a time, through the `safetensors` library, so a sharded
checkpoint never sits in memory twice.  Tokenizer files are the tokenizer module's concern.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from safetensors import safe_open
from torch import Tensor

from limelight.engine.errors import CheckpointError
from limelight.engine.models.config import ModelConfig


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read_hf_config(folder: Path) -> ModelConfig:
    try:
        raw = json.loads((folder / "config.json").read_text())
        return ModelConfig.from_hf(raw)
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{folder / 'config.json'}: cannot read config ({err})") from err
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / 'config.json'}: missing or invalid field {err}") from err


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors files (only safetensors is supported)")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{folder}: shards listed in the index are missing: {missing}")
    return files


def iter_safetensors(folder: Path) -> Iterator[tuple[str, Tensor]]:
    for file in safetensors_files(folder):
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield name, f.get_tensor(name)
        except Exception as err:  # the library raises bare exceptions on corrupt headers
            raise CheckpointError(f"{file}: not a readable safetensors file ({err})") from err

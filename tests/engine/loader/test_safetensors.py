"""Hugging Face folders: sharded safetensors load through the whole engine; bad folders
get a `CheckpointError` that names the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from limelight import LLM, CheckpointError, SamplingParams
from tests.engine.test_tokenizer import save_tiny_llama


@pytest.fixture
def sharded(tmp_path: Path) -> tuple[Path, LlamaForCausalLM]:
    _, reference = save_tiny_llama(
        tmp_path, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        max_position_embeddings=128,
    )  # fmt: skip
    for old in tmp_path.glob("model*.safetensors"):
        old.unlink()
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    return tmp_path, reference


def test_sharded_folder_generates_what_transformers_does(
    sharded: tuple[Path, LlamaForCausalLM],
) -> None:
    folder, reference = sharded
    assert len(list(folder.glob("*.safetensors"))) > 2
    assert (folder / "model.safetensors.index.json").is_file()
    llm = LLM(folder)
    out = llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    ids = torch.tensor([out[0].prompt_token_ids])
    want = reference.generate(
        ids, max_new_tokens=12, do_sample=False, min_new_tokens=12, pad_token_id=0
    )[0, ids.shape[1] :]
    assert out[0].token_ids == want.tolist()


def test_missing_shard_is_named(sharded: tuple[Path, LlamaForCausalLM]) -> None:
    folder, _ = sharded
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    (folder / victim).unlink()
    with pytest.raises(CheckpointError, match=victim):
        LLM(folder)


def test_corrupt_shard_is_named(sharded: tuple[Path, LlamaForCausalLM]) -> None:
    folder, _ = sharded
    victim = sorted(folder.glob("*.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=victim.name):
        LLM(folder)


def test_bad_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        LLM(tmp_path)

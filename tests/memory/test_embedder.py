"""The BERT encoder and embedder against transformers' BertModel, on a tiny random model
(fast) and on the packaged all-MiniLM-L6-v2 (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig as HFBertConfig
from transformers import BertModel

from limelight.engine.errors import CheckpointError, ModelNotFoundError
from limelight.memory import BertEmbedder, load_embedder
from limelight.memory.bert import BertConfig, BertEncoder
from limelight.memory.embedder import minilm_folder

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def save_tiny_bert(folder: Path) -> BertModel:
    torch.manual_seed(0)
    config = HFBertConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, "[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    return model


def reference_embed(model: BertModel, ids: list[list[int]]) -> np.ndarray:
    """sentence-transformers' recipe: mean over real tokens, then L2-normalise."""
    longest = max(map(len, ids))
    batch = torch.tensor([seq + [0] * (longest - len(seq)) for seq in ids])
    mask = torch.tensor([[1] * len(seq) + [0] * (longest - len(seq)) for seq in ids])
    with torch.no_grad():
        hidden = model(input_ids=batch, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_encoder_matches_transformers(tmp_path: Path) -> None:
    reference = save_tiny_bert(tmp_path)
    config = BertConfig.from_hf(json.loads((tmp_path / "config.json").read_text()))
    encoder = BertEncoder(config)
    encoder.load_hf_weights(tmp_path / "model.safetensors")
    ids = torch.tensor([[2, 4, 5, 6, 3], [2, 10, 11, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    with torch.no_grad():
        ours = encoder(ids, mask.float())
        theirs = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1, :4], theirs[1, :4], atol=1e-5, rtol=1e-5)


def test_embedder_pools_like_sentence_transformers(tmp_path: Path) -> None:
    reference = save_tiny_bert(tmp_path)
    embedder = BertEmbedder(tmp_path, "tiny", batch_size=2)
    texts = ["the cat sat on the mat", "a dog ran", "the dog", "cat"]
    got = embedder.embed(texts)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    expected = reference_embed(reference, [tokenizer.encode(t).ids for t in texts])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.dtype == np.float32 and embedder.dim == 32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_query("a dog ran"), got[1], atol=1e-6)
    assert embedder.embed([]).shape == (0, 32)
    assert load_embedder(str(tmp_path)).name == tmp_path.name


def test_unusable_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="packaged embedder"):
        load_embedder(str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="missing or invalid field"):
        load_embedder(str(tmp_path))


@pytest.mark.slow
def test_packaged_minilm_matches_transformers_and_ranks_sensibly() -> None:
    embedder = load_embedder()
    assert embedder.name == "all-minilm-l6-v2" and embedder.dim == 384
    assert isinstance(embedder, BertEmbedder)
    reference = BertModel.from_pretrained(minilm_folder(), add_pooling_layer=False).eval()
    texts = [
        "I adopted a puppy last week, her name is Bella.",
        "My new dog is called Bella.",
        "The stock market fell sharply on Tuesday.",
        "hi",
    ]
    got = embedder.embed(texts)
    expected = reference_embed(reference, [embedder.tokenizer.encode(t).ids for t in texts])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    query = embedder.embed_query("What is the name of my dog?")
    similarity = got @ query
    assert similarity[1] > similarity[2] and similarity[0] > similarity[2]

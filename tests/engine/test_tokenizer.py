"""`Tokenizer` against transformers, token for token, on both packaged GGUFs and a HF folder.

The reference for a GGUF is `AutoTokenizer.from_pretrained(folder, gguf_file=...)`, which
rebuilds the tokenizer from the same metadata by its own code.  Chat templates are compared
with `apply_chat_template(..., tokenize=False)`.  Gemma's reference takes ~30 s to build, so
its tests are marked slow.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from limelight.engine.errors import CheckpointError, RequestError
from limelight.engine.loader import open_checkpoint
from limelight.engine.loader.packaged import GEMMA3_CHAT_TEMPLATE, resolve_packaged
from limelight.engine.tokenizer import Tokenizer

TEXTS = [
    "Hello world", " Hello  world ", "", " ", "   leading spaces", "trailing   ",
    "a\n\nb\n\n\n\tc\t\td", "   \n   \n", "x  y   z    w", "multiple\r\nline\rendings",
    "Unicode: naïve café — 日本語のテキスト, Ελληνικά, русский, עברית, العربية, हिन्दी",
    "Emoji 🙂👍🏽🇫🇷 and a family 👨‍👩‍👧‍👦", "weird \x00 \x01 \u200b zero-width \ufeff bom \u3000",
    "def f(x):\n    return x**2  # comment\n\n\nclass A:\n\tpass\n",
    'json {"a": [1, 2.5e-3, null], "b": "<&>"}', "Numbers 1234567890 3.14159 1,000,000 2024-01-01",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text<eos> <pad> <unk> <mask> <|endoftext|> <b>bold</b> <table>",
    "ĠĊ already-byte-chars ▁▁ sentencepiece ▁", "a" * 300, "!!! ??? ... --- ***",
]  # fmt: skip
CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi there!"}],
    [
        {"role": "system", "content": "You are Ada, a terse pirate."},
        {"role": "user", "content": "  Where is the treasure?  "},
        {"role": "assistant", "content": "Under the palm. 🌴"},
        {"role": "user", "content": "Which one?\n\nThere are many."},
    ],
]


def fuzz_texts(seed: int, count: int = 150) -> Iterator[str]:
    """Random strings over pieces that stress tokenizers: scripts, spaces, digits, specials."""
    pieces = [
        " ", "  ", "\n", "\t", "\r\n", "a", "Z", "é", "ß", "日本", "語", "🙂", "👍🏽", "\u200d",
        "0", "42", "3.14", "-", "_", "'s", "'ll", "▁", "Ġ", "<", ">", "</s>", "<|im_end|>",
        "<end_of_turn>", "<start_of_turn>", "<bos>", "hello", " world", "ing", "\x7f", "\\",
    ]  # fmt: skip
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 25)))


def assert_same_tokens(ours: Tokenizer, reference: PreTrainedTokenizerBase) -> None:
    for text in [*TEXTS, *fuzz_texts(0)]:
        for special in (True, False):
            want = reference.encode(text, add_special_tokens=special)
            assert ours.encode(text, add_special_tokens=special) == want, (text, special)
        ids = ours.encode(text)
        for skip in (True, False):
            want_text = reference.decode(ids, skip_special_tokens=skip)
            assert ours.decode(ids, skip_special_tokens=skip) == want_text, (text, skip)


def assert_same_chat(
    ours: Tokenizer, reference: PreTrainedTokenizerBase, template: str | None = None
) -> None:
    for messages in CONVERSATIONS:
        for prompt in (True, False):
            want = reference.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=prompt, chat_template=template
            )
            assert ours.apply_chat_template(messages, add_generation_prompt=prompt) == want


def reference_for(name: str) -> PreTrainedTokenizerBase:
    path = resolve_packaged(name).path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def smollm2() -> tuple[Tokenizer, PreTrainedTokenizerBase]:
    return open_checkpoint("smollm2-135m-instruct").tokenizer, reference_for(
        "smollm2-135m-instruct"
    )


@pytest.fixture(scope="module")
def gemma3() -> tuple[Tokenizer, PreTrainedTokenizerBase]:
    return open_checkpoint("gemma3-270m").tokenizer, reference_for("gemma3-270m")


def test_smollm2_tokens_match_transformers(smollm2: Any) -> None:
    assert_same_tokens(*smollm2)


def test_smollm2_chat_template_matches_transformers(smollm2: Any) -> None:
    assert_same_chat(*smollm2)


def test_smollm2_special_ids(smollm2: Any) -> None:
    ours, reference = smollm2
    assert ours.vocab_size == len(reference) == 49152
    assert ours.bos_token_id == 1  # <|im_start|>, never prepended (add_bos_token is false)
    assert ours.eos_token_ids == [2, 0]  # <|im_end|>, then <|endoftext|>
    assert ours.encode("hi")[0] != 1
    assert ours.id_to_token(2) == "<|im_end|>" and ours.token_to_id("<|im_end|>") == 2


@pytest.mark.slow
def test_gemma3_tokens_match_transformers(gemma3: Any) -> None:
    assert_same_tokens(*gemma3)


@pytest.mark.slow
def test_gemma3_chat_template_matches_transformers(gemma3: Any) -> None:
    ours, reference = gemma3
    assert_same_chat(ours, reference, template=GEMMA3_CHAT_TEMPLATE)
    with pytest.raises(RequestError, match="roles must alternate"):
        ours.apply_chat_template([{"role": "assistant", "content": "first"}])


@pytest.mark.slow
def test_gemma3_special_ids(gemma3: Any) -> None:
    ours, _ = gemma3
    assert ours.bos_token_id == 2 and ours.encode("hi")[0] == 2
    assert ours.eos_token_ids == [1, 106]  # <eos>, <end_of_turn>
    assert ours.id_to_token(106) == "<end_of_turn>"
    assert ours.vocab_size == 262144


# --- Hugging Face folders and template helpers -----------------------------------------------

TINY_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] | tojson }}"
    "{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}"
    "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)


def save_tiny_llama(
    folder: Path, **config: int
) -> tuple[PreTrainedTokenizerFast, LlamaForCausalLM]:
    """A complete tiny HF checkpoint folder: random Llama weights plus the tiny tokenizer.

    `config` overrides the model sizes; `max_shard_size` (as text) is not a config key, so
    sharded saves call `save_pretrained` again themselves.
    """
    torch.manual_seed(0)
    tokenizer = save_tiny_tokenizer(folder)
    sizes = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **{**sizes, **config}))
    model.eval().save_pretrained(folder)
    return tokenizer, model


def save_tiny_tokenizer(folder: Path, template_file: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few lines, saved by transformers with BOS added."""
    backend = RustTokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(TEXTS * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
    )
    tokenizer.chat_template = TINY_TEMPLATE
    tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if template_file:  # transformers 5 writes it there; older folders keep it in the config
        assert (folder / "chat_template.jinja").is_file()
    else:
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        config["chat_template"] = TINY_TEMPLATE
    config_path.write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 3]}))
    return tokenizer


@pytest.mark.parametrize("template_file", [False, True])
def test_hf_folder_matches_transformers(tmp_path: Path, template_file: bool) -> None:
    save_tiny_tokenizer(tmp_path, template_file)
    ours, reference = Tokenizer.from_hf_folder(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert ours.bos_token_id == 1 and ours.encode("hello")[0] == 1
    assert ours.eos_token_ids == [2, 3]  # </s>, then generation_config's <|im_end|>
    assert_same_tokens(ours, reference)
    assert_same_chat(ours, reference)


def test_template_helpers(tmp_path: Path) -> None:
    save_tiny_tokenizer(tmp_path)
    ours = Tokenizer.from_hf_folder(tmp_path)
    text = ours.apply_chat_template([{"role": "user", "content": 'é <&> "q"'}])
    assert text == '<s>[user] "é <&> \\"q\\""</s>\n[assistant]'  # tojson: no escaping of <&>
    with pytest.raises(RequestError, match="no tools here"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}])
    ours.chat_template = "{{ strftime_now('%Y') }}|{{ extra }}"
    year = ours.apply_chat_template([], extra="kw")
    assert year.endswith("|kw") and year[:4].isdigit()
    ours.chat_template = None
    with pytest.raises(RequestError, match="no chat template"):
        ours.apply_chat_template([{"role": "user", "content": "hi"}])


def test_hf_folder_without_tokenizer_json(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no tokenizer\.json"):
        Tokenizer.from_hf_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable tokenizer"):
        Tokenizer.from_hf_folder(tmp_path)


def test_gguf_metadata_errors() -> None:
    with pytest.raises(CheckpointError, match=r"no tokenizer\.ggml\.tokens"):
        Tokenizer.from_gguf({"general.architecture": "llama"})
    with pytest.raises(CheckpointError, match="'rwkv' is not supported"):
        Tokenizer.from_gguf({"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.model": "rwkv"})
    with pytest.raises(CheckpointError, match=r"2 tokens but 1 tokenizer\.ggml\.scores"):
        Tokenizer.from_gguf({"tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.scores": [0.0]})


@pytest.mark.slow
def test_rendered_gemma_chat_prompt_gets_one_bos() -> None:
    tokenizer = open_checkpoint("gemma3-270m").tokenizer
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<bos>")
    ids = tokenizer.encode_prompt(prompt)
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    assert tokenizer.encode_prompt("Hi")[:1] == [tokenizer.bos_token_id]

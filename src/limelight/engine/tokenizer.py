"""Text ↔ token ids, and chat messages → prompt text: `Tokenizer`.

Encoding is the `tokenizers` library's (Hugging Face's Rust implementation).  This module
builds one from what a checkpoint carries:
- a Hugging Face folder: `tokenizer.json` as is, with `tokenizer_config.json` for the
  special tokens, `add_bos_token` and the chat template (or `chat_template.jinja`);
- GGUF metadata, from which the same tokenizer is rebuilt: byte-level BPE from tokens and
  merges (`tokenizer.ggml.model == "gpt2"`), or SentencePiece-style BPE from tokens and
  scores (`"llama"`, which Gemma uses) with byte fallback and `▁` for spaces; control tokens
  become special tokens.  The rebuild follows transformers' GGUF conversion, so both give
  the same ids.
Chat templates render in jinja2's sandbox with the helpers transformers gives them.
Nothing here knows about models, sampling or characters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import tokenizers
from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from limelight.engine.errors import CheckpointError, RequestError

_SPACE = "\u2581"  # SentencePiece's visible space
_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values
# Control tokens that end a turn, whatever the file names as eos (llama.cpp's list)
_END_OF_TURN = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
)  # fmt: skip
_GEMMA_ARCHS = ("gemma", "gemma2", "gemma3")  # merge order is file order, not score order
# Pre-tokenizer splits by `tokenizer.ggml.pre`; others use GPT-2's, as transformers does
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
_SPLITS = {
    "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
}  # fmt: skip


class Tokenizer:
    """One model's text ↔ ids, its BOS and end-of-turn ids, and its chat template.

    `encode` behaves exactly as transformers' tokenizer does; `encode_prompt` is what the
    engine uses: a rendered chat template often starts with the BOS text itself (Gemma's
    does), and then no second BOS is added.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        bos_token_id: int | None,
        eos_token_ids: Sequence[int],
        chat_template: str | None = None,
        template_tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.bos_token_id = bos_token_id
        self.eos_token_ids = list(dict.fromkeys(eos_token_ids))  # unique, first is the eos
        self.chat_template = chat_template
        # bos_token, eos_token, ...: the names chat templates read
        self.template_tokens = dict(template_tokens or {})

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; with special tokens, BOS first when the model wants one."""
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids: BOS first when the model wants one, unless the text has it."""
        bos = self.template_tokens.get("bos_token")
        return self.encode(text, add_special_tokens=not (bos and text.startswith(bos)))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def id_to_token(self, token_id: int) -> str | None:
        token: str | None = self.backend.id_to_token(token_id)
        return token

    def token_to_id(self, token: str) -> int | None:
        token_id: int | None = self.backend.token_to_id(token)
        return token_id

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """The prompt text for `messages`, as the model's template writes it."""
        if self.chat_template is None:
            raise RequestError(
                "this model has no chat template; send plain text prompts, or use a model "
                "whose checkpoint carries one"
            )
        context = {"tools": None, "documents": None, **self.template_tokens, **kwargs}
        try:
            return _compile(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt, **context
            )
        except jinja2.TemplateError as err:
            raise RequestError(f"the chat template rejected these messages: {err}") from err

    @staticmethod
    def from_hf_folder(folder: str | Path) -> Tokenizer:
        """`tokenizer.json` + `tokenizer_config.json` (+ `chat_template.jinja`) of a folder."""
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{folder}: no tokenizer.json (only fast tokenizers load)")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust side raises bare exceptions
            raise CheckpointError(f"{path}: not a readable tokenizer ({err})") from err
        config = _read_json(folder / "tokenizer_config.json")
        names = {key: _token_text(config.get(key)) for key in _TEMPLATE_TOKEN_KEYS}
        ids = {key: backend.token_to_id(text) if text else None for key, text in names.items()}
        if {"add_bos_token", "add_eos_token"} & config.keys() or backend.post_processor is None:
            backend.post_processor = _bos_eos_processor(
                names, ids, bool(config.get("add_bos_token")), bool(config.get("add_eos_token"))
            )
        return Tokenizer(
            backend,
            bos_token_id=ids["bos_token"],
            eos_token_ids=_hf_eos_ids(folder, backend, ids["eos_token"]),
            chat_template=_hf_chat_template(folder, config),
            template_tokens={key: text for key, text in names.items() if text},
        )

    @staticmethod
    def from_gguf(metadata: Mapping[str, Any] | GGUFReader) -> Tokenizer:
        """Rebuild the tokenizer a GGUF file describes in its `tokenizer.*` metadata."""
        if isinstance(metadata, GGUFReader):
            metadata = {key: field.contents() for key, field in metadata.fields.items()}
        vocab = _GGUFVocab(metadata)
        backend = _byte_level_bpe(vocab) if vocab.model == "gpt2" else _sentencepiece_bpe(vocab)
        _add_gguf_special_tokens(backend, vocab)
        names = {key: vocab.token(key) for key in _TEMPLATE_TOKEN_KEYS}
        ids = {key: vocab.ids.get(key) for key in _TEMPLATE_TOKEN_KEYS}
        backend.post_processor = _bos_eos_processor(names, ids, vocab.add_bos, vocab.add_eos)
        template = metadata.get("tokenizer.chat_template")
        return Tokenizer(
            backend,
            bos_token_id=ids["bos_token"],
            eos_token_ids=vocab.eos_ids(),
            chat_template=template if isinstance(template, str) else None,
            template_tokens={key: text for key, text in names.items() if text},
        )


_TEMPLATE_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    """The template in a sandbox with transformers' options and helpers."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Like transformers' filter: no HTML escaping (jinja's own `tojson` escapes `<`, `&`)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _bos_eos_processor(
    names: Mapping[str, str | None],
    ids: Mapping[str, int | None],
    add_bos: bool,
    add_eos: bool,
) -> processors.TemplateProcessing:
    """`[bos] $A [eos]`, each part only where wanted and known (transformers' rule)."""
    bos, eos = names["bos_token"], names["eos_token"]
    bos_id, eos_id = ids["bos_token"], ids["eos_token"]
    use_bos = add_bos and bos is not None and bos_id is not None
    use_eos = add_eos and eos is not None and eos_id is not None
    single = f"{f'{bos}:0 ' if use_bos else ''}$A:0{f' {eos}:0' if use_eos else ''}"
    pair = f"{single}{f' {bos}:1' if use_bos else ''} $B:1{f' {eos}:1' if use_eos else ''}"
    special = [(bos, bos_id)] if use_bos else []
    special += [(eos, eos_id)] if use_eos else []
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


# --- Hugging Face folders -------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read it as JSON ({err})") from err
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _hf_chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _hf_eos_ids(folder: Path, backend: tokenizers.Tokenizer, eos_id: int | None) -> list[int]:
    """The tokenizer's eos, then generation_config's and config.json's, then end-of-turns."""
    ids = [eos_id] if eos_id is not None else []
    for name in ("generation_config.json", "config.json"):
        value = _read_json(folder / name).get("eos_token_id")
        ids += value if isinstance(value, list) else [value] if isinstance(value, int) else []
    added = backend.get_added_tokens_decoder()
    ids += [i for i, t in added.items() if t.special and t.content in _END_OF_TURN]
    return ids


# --- GGUF metadata --------------------------------------------------------------------------


class _GGUFVocab:
    """The `tokenizer.ggml.*` keys, with llama.cpp's defaults for the ones left out."""

    def __init__(self, metadata: Mapping[str, Any]) -> None:
        self.tokens: list[str] = list(metadata.get("tokenizer.ggml.tokens") or [])
        if not self.tokens:
            raise CheckpointError("GGUF metadata has no tokenizer.ggml.tokens: no tokenizer")
        self.model = metadata.get("tokenizer.ggml.model", "llama")
        if self.model not in ("gpt2", "llama"):
            raise CheckpointError(
                f"GGUF tokenizer model {self.model!r} is not supported (gpt2 and llama are)"
            )
        self.architecture = str(metadata.get("general.architecture", ""))
        self.pre = metadata.get("tokenizer.ggml.pre")
        self.scores: list[float] = list(metadata.get("tokenizer.ggml.scores") or [])
        self.types: list[int] = list(metadata.get("tokenizer.ggml.token_type") or [])
        self.merges: list[str] = list(metadata.get("tokenizer.ggml.merges") or [])
        for name, values in (("scores", self.scores), ("token_type", self.types)):
            if values and len(values) != len(self.tokens):
                raise CheckpointError(
                    f"GGUF metadata lists {len(self.tokens)} tokens but "
                    f"{len(values)} tokenizer.ggml.{name} entries"
                )
        key = "tokenizer.ggml.{}".format
        self.add_bos = bool(metadata.get(key("add_bos_token"), self.model == "llama"))
        self.add_eos = bool(metadata.get(key("add_eos_token"), False))
        self.add_space_prefix = bool(metadata.get(key("add_space_prefix"), self.model == "llama"))
        named = {
            "bos_token": "bos",
            "eos_token": "eos",
            "unk_token": "unknown",
            "pad_token": "padding",
        }
        self.ids: dict[str, int] = {
            name: int(metadata[key(f"{k}_token_id")])
            for name, k in named.items()
            if metadata.get(key(f"{k}_token_id")) is not None
            and 0 <= int(metadata[key(f"{k}_token_id")]) < len(self.tokens)
        }
        self.end_of_turn_ids = [
            int(metadata[key(f"{k}_token_id")])
            for k in ("eot", "eom")
            if metadata.get(key(f"{k}_token_id")) is not None
        ]

    def token(self, name: str) -> str | None:
        return self.tokens[self.ids[name]] if name in self.ids else None

    def token_type(self, index: int) -> int:
        return self.types[index] if index < len(self.types) else 1

    def eos_ids(self) -> list[int]:
        eos = [self.ids["eos_token"]] if "eos_token" in self.ids else []
        named = [
            i
            for i, token in enumerate(self.tokens)
            if self.token_type(i) == _CONTROL and token in _END_OF_TURN
        ]
        return eos + self.end_of_turn_ids + named


def _byte_level_bpe(vocab: _GGUFVocab) -> tokenizers.Tokenizer:
    """GPT-2 style BPE over bytes spelled as printable characters; merges from the file."""
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    tokens = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(vocab.tokens)
    }
    merges = [(left, right) for left, _, right in (m.partition(" ") for m in vocab.merges)]
    backend = tokenizers.Tokenizer(models.BPE(tokens, merges, fuse_unk=False))
    split = _SPLITS.get(vocab.pre or "")
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    backend.decoder = decoders.ByteLevel()
    return backend


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of each byte: printable Latin-1 as is, the rest shifted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    shifted = (b for b in range(256) if b not in printable)
    extra = {b: chr(256 + n) for n, b in enumerate(shifted)}
    return {b: chr(b) if b in printable else extra[b] for b in range(256)}


def _sentencepiece_bpe(vocab: _GGUFVocab) -> tokenizers.Tokenizer:
    """SentencePiece BPE: merges recovered from the vocabulary, byte fallback, `▁` spaces."""
    # A token of spaces is stored with real spaces; text reaches BPE with `▁` for spaces.
    tokens = [_SPACE * len(t) if " " in t and not t.strip() else t for t in vocab.tokens]
    if vocab.architecture in _GEMMA_ARCHS:  # Gemma's scores do not follow its merge order
        ranks = [-float(i) for i in range(len(tokens))]
    else:
        ranks = vocab.scores or [0.0] * len(tokens)
    unk = vocab.token("unk_token")
    backend = tokenizers.Tokenizer(
        models.BPE(
            {t: i for i, t in enumerate(tokens)},
            _merges_from_vocab(tokens, ranks),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    steps = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        backend.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=_SPACE, prepend_scheme="first", split=False
        )
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    else:
        backend.normalizer = normalizers.Replace(" ", _SPACE)
    backend.decoder = decoders.Sequence(steps)
    return backend


def _merges_from_vocab(tokens: list[str], ranks: list[float]) -> list[tuple[str, str]]:
    """Every split of a token into two tokens, the best-ranked merged token first.

    The order is transformers' `generate_merges`: by rank, then longer left part, then
    longer right part; ties keep vocabulary order.
    """
    index = {t: i for i, t in enumerate(tokens)}
    ranked: list[tuple[float, str, str]] = []
    for token, rank in zip(tokens, ranks, strict=True):
        pairs = [
            (token[:k], token[k:])
            for k in range(1, len(token))
            if token[:k] in index and token[k:] in index
        ]
        pairs.sort(key=lambda p: (index[p[0]], index[p[1]]))
        ranked += [(rank, left, right) for left, right in pairs]
    ranked.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)
    return [(left, right) for _, left, right in ranked]


def _add_gguf_special_tokens(backend: tokenizers.Tokenizer, vocab: _GGUFVocab) -> None:
    """Control tokens become special; user-defined ones (`<b>`, `\\n\\n`) match whole.

    In a byte-level vocabulary a control token spelled outside the byte alphabet is a
    llama.cpp mislabel, and is left out as transformers does.
    """
    alphabet = set(_bytes_to_unicode().values()) if vocab.model == "gpt2" else None
    known = backend.get_vocab(with_added_tokens=False)
    special, plain = [], []
    for i, token in enumerate(vocab.tokens):
        kind = vocab.token_type(i)
        if kind == _CONTROL and (alphabet is None or set(token) <= alphabet):
            special.append(AddedToken(token, normalized=False, special=True))
        elif kind == _USER_DEFINED and token in known:
            plain.append(AddedToken(token, normalized=False, special=False))
    backend.add_special_tokens(special)
    backend.add_tokens(plain)

"""Incremental, UTF-8-safe detokenisation and stop-string matching for one request.

Byte-level tokenizers split multi-byte characters across tokens, so decoding a suffix of
tokens on its own can end in a replacement character.  The detokenizer decodes a short
window ending at the newest token, relative to the window before it, and holds text back
until it stops ending in U+FFFD.  Stop strings are matched against the text so far; text
that could still become a stop string is held back too, so no stop string ever leaks
into a stream.
"""

from __future__ import annotations

from typing import Protocol

REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    def __init__(
        self, tokenizer: Decoder, stop: list[str], skip_special_tokens: bool = True
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0  # window start: context that makes the next decode correct
        self.read_offset = 0  # tokens whose text is already in self.text
        self.text = ""  # all decoded text (stop strings included, for matching)
        self.emitted = 0  # characters of self.text already returned
        self.stopped = False

    @property
    def output_text(self) -> str:
        """The text shown so far (up to, not including, a matched stop string)."""
        return self.text[: self.emitted]

    def add(self, token_ids: list[int], final: bool = False) -> str:
        """Feed new tokens; return the text that can safely be shown now."""
        self.ids.extend(token_ids)
        window = self._decode(self.ids[self.prefix_offset :])
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        if len(window) > len(before) and (final or not window.endswith(REPLACEMENT)):
            self.text += window[len(before) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self._release(final)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _release(self, final: bool) -> str:
        end = len(self.text)
        for stop in self.stop:
            at = self.text.find(stop, max(0, self.emitted - len(stop) + 1))
            if at != -1 and at < end:
                end, self.stopped = at, True
        if not self.stopped and not final:
            end -= self._held_back(self.text[self.emitted : end])
        piece = self.text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece

    def _held_back(self, pending: str) -> int:
        """Length of the longest tail of `pending` that begins some stop string."""
        longest = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(pending)), longest, -1):
                if stop.startswith(pending[-n:]):
                    longest = n
                    break
        return longest

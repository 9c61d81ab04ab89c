"""`SentenceSplitter`: a streamed chat reply cut into pieces worth synthesising one by one.

Text arrives in deltas of a few characters; speech can start as soon as one sentence is
complete.  The splitter cuts after a sentence end (. ! ? … and closing quotes, followed by
whitespace and a word that does not start in lower case), after each line, and never
after an abbreviation ("Mr.", "e.g."), an initial ("J."), a list number ("1.") or inside
a number ("3.5", "3,000").  To start speaking sooner, the first piece may end at a clause
boundary (, ; : or a dash) once it holds `first_min_words` words; later pieces are whole
sentences unless one runs past `max_chars`, which is then cut at its last clause boundary
(or, with none, its last space).  Pieces are returned as `speakable` text (markup.py), and
a piece with nothing left to say is dropped.  Pure string work: no model, no audio.
"""

from __future__ import annotations

import re

from limelight.voice.markup import is_inside_markup, speakable

# Abbreviations that are followed by a capitalised word and yet end no sentence.
# ("etc." and "a.m." usually do end one, and a lower-case word after them never cuts.)
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "capt", "cmdr",
    "col", "gen", "lt", "maj", "sgt", "rev", "hon", "gov", "pres", "sen", "rep", "fr", "no",
    "nos", "vol", "vs", "fig", "approx", "dept", "est", "e.g", "i.e", "cf", "viz", "a.k.a",
})  # fmt: skip
_CLOSERS = "\"'”’)\\]*_"  # may follow the punctuation that ends a sentence or clause
_BOUNDARY = re.compile(
    rf"\n|(?:\.{{3}}|…|[.!?])+[{_CLOSERS}]*|[,;:][{_CLOSERS}]*|\s[-–—]\s|—"
)  # fmt: skip
_INITIALISM = re.compile(r"(?:[a-z]\.)+[a-z]")  # "e.g", "u.s"


class SentenceSplitter:
    def __init__(self, first_min_words: int = 3, max_chars: int = 200) -> None:
        assert first_min_words >= 1 and max_chars >= 20
        self.first_min_words = first_min_words
        self.max_chars = max_chars
        self._buffer = ""  # text received and not yet returned
        self._num_pieces = 0  # pieces returned so far in this reply

    def push(self, delta: str) -> list[str]:
        """The pieces completed by `delta`."""
        self._buffer += delta
        return self._drain(is_final=False)

    def flush(self) -> list[str]:
        """The rest, at the end of the reply; the splitter is then ready for another."""
        pieces = self._drain(is_final=True)
        rest = speakable(self._buffer)
        if rest:
            pieces.append(rest)
        self._buffer, self._num_pieces = "", 0
        return pieces

    def _drain(self, is_final: bool) -> list[str]:
        pieces = []
        while (cut := self._next_cut(is_final)) is not None:
            piece = speakable(self._buffer[:cut])
            self._buffer = self._buffer[cut:].lstrip()
            if piece:
                pieces.append(piece)
                self._num_pieces += 1
        return pieces

    def _next_cut(self, is_final: bool) -> int | None:
        """Where the first complete piece of the buffer ends, if one does yet."""
        text = self._buffer
        clause_cuts: list[int] = []
        for match in _BOUNDARY.finditer(text):
            kind = _boundary_kind(text, match, is_final)
            if kind == "wait":
                break  # the end of the buffer: the next delta decides
            cut = match.end()
            if kind == "none" or is_inside_markup(text[:cut]):
                continue
            if kind == "sentence" or self._is_early_first(text[:cut]):
                if len(speakable(text[:cut])) <= self.max_chars:
                    return cut
                shorter = self._long_cut(text[:cut], clause_cuts)
                return cut if shorter is None else shorter
            clause_cuts.append(cut)
        if len(speakable(text)) <= self.max_chars:
            return None
        return self._long_cut(text, clause_cuts)

    def _is_early_first(self, piece: str) -> bool:
        return self._num_pieces == 0 and len(speakable(piece).split()) >= self.first_min_words

    def _long_cut(self, text: str, clause_cuts: list[int]) -> int | None:
        """For a sentence past max_chars: its last clause boundary, else its last space."""
        fitting = [cut for cut in clause_cuts if len(speakable(text[:cut])) <= self.max_chars]
        if fitting:
            return fitting[-1]
        spaces = [match.start() for match in re.finditer(r"\s+", text.rstrip())]
        for cut in reversed(spaces):
            if not is_inside_markup(text[:cut]) and len(speakable(text[:cut])) <= self.max_chars:
                return cut if speakable(text[:cut]) else None
        return None


def _boundary_kind(text: str, match: re.Match[str], is_final: bool) -> str:
    """What `match` is: "sentence", "clause", "none" (no boundary) or "wait" (too early)."""
    mark, rest = match.group(), text[match.end() :]
    if mark == "\n":
        return "sentence"
    if mark[0] in ",;:":
        if not rest:
            return "none" if is_final else "wait"  # "3," may become "3,000"
        return "clause" if rest[0].isspace() else "none"
    if mark[0] not in ".!?…":
        return "clause"  # a dash
    if not rest:
        return "sentence" if is_final else "wait"
    if not rest[0].isspace():
        return "none"  # "3.5", "e.g."'s first dot, "...?"
    gap = rest[: len(rest) - len(rest.lstrip())]
    following = rest[len(gap) :]
    if "\n" in gap:
        return "sentence"
    if not following:
        return "sentence" if is_final else "wait"
    is_ellipsis = mark.rstrip(_CLOSERS).endswith(("...", "…"))
    if mark.rstrip(_CLOSERS) == "." and _is_abbreviation(text[: match.start()]):
        return "none"
    if following[0].islower():
        return "clause" if is_ellipsis else "none"  # "Well... maybe"; '"Really?" she asked'
    return "sentence"


def _is_abbreviation(before: str) -> bool:
    """Whether the word just before a full stop makes it an abbreviation's."""
    line = before.rsplit("\n", 1)[-1]
    word = line.rsplit(None, 1)[-1] if line.strip() else ""
    word = word.lstrip("\"'“‘([*_")
    if word.isdigit() and line.strip() == word:
        return True  # "1. Pack the bags" starts a list item
    if len(word) == 1 and word.isupper():
        return True  # an initial: "J. R. R. Tolkien"
    lower = word.lower()
    return lower in ABBREVIATIONS or _INITIALISM.fullmatch(lower) is not None

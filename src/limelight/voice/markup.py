"""What of a chat reply is read aloud: roleplay actions and markdown are not.

`speakable(text)` drops actions between single asterisks (`*smiles*`; one left open ends
at a blank line) but for the speech quoted inside one (`*She turns. "Come in."*` says
"Come in."), fenced code and emoji, keeps the words of emphasis, links and list items
without their symbols, and squeezes whitespace. `is_inside_markup(text)` says whether
`text` ends inside an action or a code fence, where a streaming splitter must not cut.
Regular expressions over plain strings: no markdown parser, because the input is a chat
reply, not a document, and an unclosed asterisk must be handled the same way while
streaming and at the end.
"""

from __future__ import annotations

import re
import unicodedata

# An action: `*` opening (not after a word character, not before a space) up to a `*`
# closing (not after a space, not before a word character); "5 * 3" and "f*ck" are none.
# An action never runs past a blank line: a model that opens one per line and never closes
# it ("*She sits.\n*Tea arrives.\n\nWe talked...") still says its next paragraph.
_IN_PARAGRAPH = r"(?:(?!\n[ \t]*\n).)"
_ACTION = re.compile(rf"(?<![\w*])\*(?=[^\s*])({_IN_PARAGRAPH}*?)(?<=[^\s*])\*(?![\w*])", re.DOTALL)
_ACTION_OPEN = re.compile(rf"(?<![\w*])\*(?=[^\s*]){_IN_PARAGRAPH}*", re.DOTALL)  # unclosed
_ACTION_OPEN_AT_END = re.compile(rf"{_ACTION_OPEN.pattern}\Z", re.DOTALL)
_QUOTED = re.compile(r'"([^"]*\w[^"]*)"|“([^”]*\w[^”]*)”')  # what a narrated action says
_FENCE = re.compile(r"```.*?(```|$)", re.DOTALL)  # a code block, closed or not
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_LINE_MARKERS = re.compile(r"^[ \t]*(?:#{1,6}|>+|[-+*•]|\d{1,3}[.)])[ \t]+", re.MULTILINE)
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE)  # --- or ***
_SPACE_BEFORE_MARK = re.compile(r" ([,.!?;:])")  # left where something was removed
_SYMBOLS = re.compile(r"\*|~~|`|(?<!\w)_+|_+(?!\w)")  # what is left of the markup


def speakable(text: str) -> str:
    """The words of `text` that should be spoken, on one line ("" if none)."""
    text = _FENCE.sub(" ", text)
    text = _RULE.sub(" ", text)
    text = _LINE_MARKERS.sub("", text)
    text = _IMAGE.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = text.replace("**", "").replace("__", "")  # bold: keep the words
    text = _ACTION.sub(_quoted_speech, text)
    text = _ACTION_OPEN.sub(_quoted_speech, text)
    text = _SYMBOLS.sub("", text)
    text = "".join(" " if unicodedata.category(char) == "So" else char for char in text)
    text = _SPACE_BEFORE_MARK.sub(r"\1", " ".join(text.split()))
    return text if any(char.isalnum() for char in text) else ""


def _quoted_speech(action: re.Match[str]) -> str:
    """An action replaced by the speech quoted in it (a space if none)."""
    quotes = [a or b for a, b in _QUOTED.findall(action.group(0))]
    return f" {' '.join(quotes)} "


def is_inside_markup(text: str) -> bool:
    """Whether `text` ends inside an action or a code fence (more of it is still to come)."""
    if text.count("```") % 2:
        return True
    text = _RULE.sub(" ", _LINE_MARKERS.sub("", _FENCE.sub(" ", text)))
    text = _ACTION.sub(" ", text.replace("**", ""))
    return _ACTION_OPEN_AT_END.search(text) is not None

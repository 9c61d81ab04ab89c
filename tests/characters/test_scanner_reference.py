"""The scanner against a naive reference on random lorebooks and chats.

The reference re-derives everything from the entries' raw `extensions` with plain string
searches (no regular expressions) and a loop written straight from the rules in
`scanner.py`'s docstring.  The vocabulary has words inside other words ("cat"/"catalog",
"sun"/"Sunny") so substring, whole-word and case rules all get exercised.
"""

from __future__ import annotations

import random

from limelight.characters import Lorebook, LoreEntry, ScanSettings, scan_lorebook

VOCAB = ["cat", "catalog", "dog", "hotdog", "sun", "Sunny", "SUN", "moon", "star", "stars",
         "red star", "ice_cream", "ice", "bored", "red"]  # fmt: skip
FILLER = ["the", "a", "and", "then", "-", "(", ")", "x"]


def naive_contains(key: str, text: str, case_sensitive: bool, whole_words: bool) -> bool:
    key = key.strip()
    if not key:
        return False
    if not case_sensitive:
        key, text = key.lower(), text.lower()
    start = text.find(key)
    while start != -1:
        end = start + len(key)
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        is_word = lambda c: c.isalnum() or c == "_"  # noqa: E731
        if not whole_words or (not is_word(before) and not is_word(after)):
            return True
        start = text.find(key, start + 1)
    return False


def naive_fires(entry: LoreEntry, text: str, settings: ScanSettings) -> bool:
    ext = entry.extensions
    if entry.constant:
        return True
    case = ext.get("case_sensitive")
    case = settings.case_sensitive if case is None else case
    whole = ext.get("match_whole_words")
    whole = settings.match_whole_words if whole is None else whole
    if not any(naive_contains(k, text, case, whole) for k in entry.keys):
        return False
    secondary = [k for k in entry.secondary_keys or [] if k.strip()]
    if not entry.selective or not secondary:
        return True
    hits = sum(naive_contains(k, text, case, whole) for k in secondary)
    logic = ext.get("selectiveLogic", 0)
    if logic == 0:
        return hits > 0
    if logic == 1:
        return hits < len(secondary)
    if logic == 2:
        return hits == 0
    return hits == len(secondary)


def naive_scan(
    book: Lorebook, messages: list[str], settings: ScanSettings
) -> list[tuple[int, int]]:
    """(entry index, pass) admitted, in admission order."""
    admitted: list[tuple[int, int]] = []
    used, buffer = 0, ""
    for pass_number in range(1, settings.max_passes + 1):
        done = {i for i, _ in admitted}
        found = []
        for i, entry in enumerate(book.entries):
            ext = entry.extensions
            if i in done or not entry.enabled:
                continue
            if pass_number == 1 and ext.get("delay_until_recursion") is True:
                continue
            if pass_number > 1 and ext.get("exclude_recursion") is True:
                continue
            depth = ext.get("scan_depth")
            depth = settings.scan_depth if depth is None else depth
            text = "\n".join(messages[-depth:]) if depth > 0 else ""
            if pass_number > 1:
                text = text + "\n" + buffer
            if naive_fires(entry, text, settings):
                found.append(i)
        if not found:
            break

        def rank(i: int) -> tuple[bool, float, int]:
            e = book.entries[i]
            weight = e.insertion_order if e.priority is None else e.priority
            return (not e.constant, -weight, i)

        new_content = []
        for i in sorted(found, key=rank):
            cost = len(book.entries[i].content.split())
            if settings.token_budget is not None and used + cost > settings.token_budget:
                return admitted
            used += cost
            admitted.append((i, pass_number))
            if book.entries[i].extensions.get("prevent_recursion") is not True:
                new_content.append(book.entries[i].content)
        if not settings.recursive or not new_content:
            break
        buffer = "\n".join([buffer, *new_content]) if buffer else "\n".join(new_content)
    return admitted


def random_text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB + FILLER) for _ in range(n))


def random_entry(rng: random.Random) -> LoreEntry:
    maybe = lambda *options: rng.choice(options)  # noqa: E731
    extensions = {
        "selectiveLogic": rng.randrange(4),
        "exclude_recursion": rng.random() < 0.2,
        "prevent_recursion": rng.random() < 0.2,
        "delay_until_recursion": rng.random() < 0.1,
        "scan_depth": maybe(None, None, 0, 1, 3),
        "case_sensitive": maybe(None, None, True, False),
        "match_whole_words": maybe(None, None, True, False),
    }
    return LoreEntry(
        keys=rng.sample(VOCAB, rng.randint(0, 3)) + maybe([], [], [" "]),
        content=random_text(rng, rng.randint(0, 8)),
        extensions=extensions,
        enabled=rng.random() < 0.9,
        insertion_order=maybe(10, 50, 100),
        priority=maybe(None, None, None, 5, 200),
        constant=rng.random() < 0.08,
        selective=rng.random() < 0.6,
        secondary_keys=rng.sample(VOCAB, rng.randint(0, 2)),
    )


def test_scanner_matches_the_naive_reference() -> None:
    rng = random.Random(1234)
    num_fired = 0
    for _ in range(600):
        book = Lorebook([random_entry(rng) for _ in range(rng.randint(1, 10))])
        messages = [random_text(rng, rng.randint(1, 6)) for _ in range(rng.randint(0, 5))]
        settings = ScanSettings(
            scan_depth=rng.randint(0, 4),
            token_budget=rng.choice([None, None, 3, 8, 20]),
            recursive=rng.random() < 0.8,
            max_passes=rng.randint(1, 5),
            case_sensitive=rng.random() < 0.3,
            match_whole_words=rng.random() < 0.4,
        )
        result = scan_lorebook(book, messages, lambda s: len(s.split()), settings)
        got = [(a.index, a.pass_number) for a in result.activations]
        assert got == naive_scan(book, messages, settings), (book, messages, settings)
        num_fired += len(got)
    assert num_fired > 600  # the random cases do activate entries, and often


def test_scanner_is_deterministic() -> None:
    rng = random.Random(7)
    book = Lorebook([random_entry(rng) for _ in range(30)])
    messages = [random_text(rng, 10) for _ in range(6)]
    first = scan_lorebook(book, messages, lambda s: len(s.split()))
    for _ in range(3):
        assert scan_lorebook(book, messages, lambda s: len(s.split())) == first

"""Decoded views of a prompt: undo the encodings an attacker can apply and a small classifier cannot read.

Each registered view decoder takes text and returns a decoded version, or None when it does not apply. Decoders
run in order, each on the previous result, so chains (base64 of leetspeak) unwind. The input classifier scores
every view and takes the maximum.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from ccguard.registry import REGISTRY, register
from ccguard.transforms.encoding import HOMOGLYPHS, LEET, MORSE, ZERO_WIDTH, atbash_map, caesar_shift

Decoder = Callable[[str], str | None]

# Order matters for the cumulative chain: normalise first, then byte encodings, then letter-level tricks.
ORDER = ("normalize", "base64", "hex", "binary", "morse", "spaced", "leetspeak", "cipher", "reversed")


@dataclass(frozen=True)
class View:
    """One rendering of the prompt: 'raw' or the decoders applied so far, e.g. 'normalize+base64'."""

    name: str
    text: str


_COMMON_BIGRAMS = frozenset(
    ["th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of", "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le", "ve", "co", "me", "de", "hi", "ri", "ro", "ic", "ne", "ea", "ra", "ce", "li", "ch", "ll", "be", "ma", "si", "om", "ur"]
)
_FUNCTION_WORDS = frozenset(
    ["the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "how", "what", "why", "when", "where", "who", "is", "are", "was", "be", "do", "does", "can", "could", "would", "should", "i", "you", "me", "my", "we", "it", "this", "that", "these", "those", "from", "by", "at", "as", "make", "get", "give", "tell", "explain", "please", "step", "steps", "about"]
)


def englishness(text: str) -> float:
    """A cheap score of how much text looks like English: common-bigram rate plus function-word rate."""
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return 0.0
    bigrams = [w[i : i + 2] for w in words for i in range(len(w) - 1)]
    b = sum(g in _COMMON_BIGRAMS for g in bigrams) / max(1, len(bigrams))
    f = sum(w in _FUNCTION_WORDS for w in words) / len(words)
    return b + f


_INV_HOMO = {v: k for k, v in HOMOGLYPHS.items()}
_ZW = dict.fromkeys(map(ord, ZERO_WIDTH + ("\ufeff", "\u00ad")))


# A word mixing Latin letters with look-alikes, also when written one letter at a time ('H о w').
_MIXED_SCRIPT = re.compile(
    r"[A-Za-z][{0}]|[{0}][A-Za-z]|(?<!\S)(?:[A-Za-z] {{1,3}}[{0}]|[{0}] {{1,3}}[A-Za-z])(?!\S)".format(
        re.escape("".join(_INV_HOMO))
    )
)


def _disguised(text: str) -> bool:
    """Whether letters or digits are disguised: zero-width characters, a word mixing Latin with look-alike
    Cyrillic/Greek letters, or a compatibility form of a letter or digit (fullwidth, mathematical, circled)."""
    if any(ord(c) in _ZW for c in text) or _MIXED_SCRIPT.search(text):
        return True
    for c in set(text):
        if not c.isascii():
            folded = unicodedata.normalize("NFKC", c)
            if folded != c and folded.isascii() and folded.isalnum():
                return True
    return False


@register("view", "normalize")
def normalize() -> Decoder:
    """NFKC (fullwidth to ASCII), strip zero-width characters, map Cyrillic/Greek homoglyphs to Latin.

    Fires only when letters or digits were disguised: a zero-width character, a homoglyph, or a compatibility
    form of a letter or digit (fullwidth, mathematical, circled). Punctuation alone ('…', Chinese '，') and plain
    Cyrillic or Greek words are normal text, and a view that only rewrites them would cost a full extra scoring
    pass for nothing.
    """

    def dec(text: str) -> str | None:
        if not _disguised(text):
            return None
        out = unicodedata.normalize("NFKC", text).translate(_ZW)
        out = "".join(_INV_HOMO.get(c, c) for c in out)
        return out if out != text else None

    return dec


def _printable_ratio(s: str) -> float:
    return sum(c.isprintable() or c in "\n\t" for c in s) / max(1, len(s))


def _replace_runs(text: str, pattern: re.Pattern[str], decode: Callable[[str], str | None]) -> str | None:
    changed = False

    def sub(m: re.Match[str]) -> str:
        nonlocal changed
        d = decode(m.group(0))
        if d is None:
            return m.group(0)
        changed = True
        return d

    out = pattern.sub(sub, text)
    return out if changed else None


def _bytes_to_text(raw: bytes) -> str | None:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return s if s and _printable_ratio(s) > 0.95 else None


_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")


@register("view", "base64")
def b64() -> Decoder:
    """Decode runs of base64 that yield printable UTF-8 text."""

    def one(run: str) -> str | None:
        if len(run) % 4 == 1:
            return None
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
        s = _bytes_to_text(raw)
        # Long plain words also match the alphabet; demand the decode look like language, not noise.
        return s if s and (englishness(s) > 0.25 or not s.isascii()) else None

    return lambda text: _replace_runs(text, _B64, one)


_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[ :]?){8,}")


@register("view", "hex")
def hex_() -> Decoder:
    """Decode runs of hex byte pairs (optionally space- or colon-separated)."""

    def one(run: str) -> str | None:
        digits = re.sub(r"[ :]", "", run)
        if len(digits) % 2:
            digits = digits[:-1]
        return _bytes_to_text(bytes.fromhex(digits))

    return lambda text: _replace_runs(text, _HEX, one)


_BIN = re.compile(r"(?:[01]{8}\s?){4,}")


@register("view", "binary")
def binary() -> Decoder:
    """Decode runs of 8-bit binary groups."""

    def one(run: str) -> str | None:
        groups = run.split()
        if any(len(g) != 8 for g in groups):
            return None
        return _bytes_to_text(bytes(int(g, 2) for g in groups))

    return lambda text: _replace_runs(text, _BIN, one)


_INV_MORSE = {v: k for k, v in MORSE.items()}
_MORSE = re.compile(r"(?:[.\-]{1,7}[ /]+){6,}[.\-]{1,7}")


@register("view", "morse")
def morse() -> Decoder:
    """Decode runs of Morse code (letters separated by spaces, words by '/')."""

    def one(run: str) -> str | None:
        words = [w.split() for w in run.split("/")]
        out = " ".join("".join(_INV_MORSE.get(c, "") for c in w) for w in words)
        return out if out.strip() else None

    return lambda text: _replace_runs(text, _MORSE, one)


_SPACED = re.compile(r"(?:\S {1,3}){5,}\S")


@register("view", "spaced")
def spaced() -> Decoder:
    """Join text written one character at a time ('h o w   t o'); wider gaps mark word breaks."""

    def one(run: str) -> str | None:
        return " ".join(w.replace(" ", "") for w in re.split(r" {2,}", run))

    return lambda text: _replace_runs(text, _SPACED, lambda run: one(run) if "  " in run or len(run) > 20 else None)


def _best_line(line: str, candidates: Callable[[str], list[str]], margin: float) -> str | None:
    letters = sum(c.isalpha() and c.isascii() for c in line)
    if letters < 12:
        return None
    base = englishness(line)
    if base >= 0.55:  # already reads as English: nothing to undo (and most lines are like this)
        return None
    best = max(candidates(line), key=englishness)
    score = englishness(best)
    # Demand clearly English output: a shifted line of another language can look slightly more English by chance.
    return best if score > max(base * margin, base + 0.2, 0.5) else None


def _per_line(text: str, candidates: Callable[[str], list[str]], margin: float) -> str | None:
    lines = text.split("\n")
    changed = False
    for i, line in enumerate(lines):
        d = _best_line(line, candidates, margin)
        if d is not None:
            lines[i], changed = d, True
    return "\n".join(lines) if changed else None


@register("view", "cipher")
def cipher() -> Decoder:
    """Undo Caesar shifts (ROT13 included) and Atbash, line by line, where the result reads more like English."""
    return lambda text: _per_line(text, lambda s: [caesar_shift(s, k) for k in range(1, 26)] + [atbash_map(s)], 1.6)


@register("view", "reversed")
def reversed_() -> Decoder:
    """Reverse lines that read more like English backwards."""
    return lambda text: _per_line(text, lambda s: [s[::-1]], 1.4)


_INV_LEET = {v: k for k, v in LEET.items()} | {"@": "a", "$": "s", "!": "i", "|": "l"}
_LEET_RUN = re.compile(r"[a-zA-Z0-9@$!|]+")
# Evidence that a text is leetspeak: a word with one or two look-alike characters between letters ('h0w', 'd00m',
# 'sh!t') that is not all capitals (formulas and codes: H2SO4, M78). Digits only at a word's edge are ordinary text:
# '2nd', '10am', 'mp3', 'Hello!', 'x200B'.
_LEET_INSIDE = re.compile("[a-zA-Z][{}]{{1,2}}[a-zA-Z]".format(re.escape("".join(_INV_LEET))))
# Once a text is leetspeak, every word mixing letters with digits or symbols is decoded ('w13', 'Da5').
_LEET_WORD = re.compile(r"\b(?=\w*[a-zA-Z])(?=\w*[0-9])[\w@$!|]{2,}\b|\b(?=[\w@$!|]*[@$!|])[\w@$!|]{3,}")
# Addresses are not words: 'bob@example.com', 'https://x.io/a1b2'.
_ADDRESS = re.compile(r"\S+@\S+\.\w+|\w+://\S+|www\.\S+")
_LONE_DIGIT = re.compile(r"(?<=[a-zA-Z] )[0-9](?= [a-zA-Z])")


def _leet_evidence(word: str) -> bool:
    return bool(_LEET_INSIDE.search(word)) and not all(c.isupper() for c in word if c.isalpha())


@register("view", "leetspeak")
def leetspeak() -> Decoder:
    """Map digits and symbols inside words back to letters (h4ck3r -> hacker), in text with clear leetspeak."""

    def dec(text: str) -> str | None:
        addresses = [m.span() for m in _ADDRESS.finditer(text)]

        def free(m: re.Match[str]) -> bool:  # long runs are base64 or hashes, not words
            return len(m.group(0)) <= 24 and not any(a <= m.start() < b for a, b in addresses)

        if not any(_leet_evidence(m.group(0)) and free(m) for m in _LEET_RUN.finditer(text)):
            return None
        hits = 0

        def one(m: re.Match[str]) -> str:
            nonlocal hits
            if not free(m):
                return m.group(0)
            hits += 1
            return "".join(_INV_LEET.get(c, c) for c in m.group(0))

        out = _LEET_WORD.sub(one, text)
        if hits >= 3:
            # In text that is clearly leetspeak, a lone digit between words is a letter too ('4 virus').
            out = _LONE_DIGIT.sub(lambda m: _INV_LEET.get(m.group(0), m.group(0)), out)
        return out if out != text else None

    return dec


def decoders(names: tuple[str, ...] = ORDER) -> list[tuple[str, Decoder]]:
    return [(n, REGISTRY.create("view", n)) for n in names]


def decoded_views(text: str, chain: list[tuple[str, Decoder]] | None = None) -> list[View]:
    """The raw text; each decoder applied alone (after normalisation); and the cumulative chain of all that fired.

    Independent views keep one wrong guess (a cipher 'decoding' plain German) from hiding what another decoder
    recovered; the chain unwinds stacked encodings. The last view is the most decoded one.
    """
    chain = chain if chain is not None else decoders()
    views = [View("raw", text)]
    seen = {text}
    start, head = text, []
    if chain and chain[0][0] == "normalize":
        norm = chain[0][1](text)
        if norm is not None:
            start, head = norm, ["normalize"]
            views.append(View("normalize", norm))
            seen.add(norm)
        chain = chain[1:]
    current, applied = start, list(head)
    for name, dec in chain:
        alone = dec(start)
        if alone is not None and alone not in seen:
            seen.add(alone)
            views.append(View("+".join([*head, name]), alone))
        out = alone if current == start else dec(current)
        if out is not None and out != current:
            current = out
            applied.append(name)
    if current not in seen:
        views.append(View("+".join(applied), current))
    elif current != text and views[-1].text != current:
        # Keep the contract that the last view is the most decoded one.
        views = [v for v in views if v.text != current] + [View("+".join(applied), current)]
    return views

"""Decoded views of a prompt: undo the encodings an attacker can apply and a small classifier cannot read.

Each registered view decoder takes text and returns it with every encoded *span* it recognises decoded in place
(or None when nothing applies), so the classifier reads "the instruction + the decoded request" in context. What a
decoding yields is decoded again, up to ``MAX_DEPTH`` levels (base64 of ROT13 of leetspeak unwinds). The input
classifier scores every view and takes the maximum.

Every decoder and evidence rule runs in time linear in the text: patterns have no nested unbounded repetition,
work happens per whitespace token or per span, and spans are cut to a bounded length. A decoder fires only on
evidence of its encoding, so ordinary text costs no extra scoring pass.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ccguard.registry import REGISTRY, register
from ccguard.transforms.encoding import HOMOGLYPHS, LEET, MORSE, ZERO_WIDTH, atbash_map, caesar_shift

Decoder = Callable[[str], str | None]

# Views register an ``order``: lower runs first. Normalisation (order 0) runs once before the others (it undoes
# disguises every other decoder would trip on); the rest are tried at each level in their order. A plugin view
# without one runs after the built-ins.
DEFAULT_ORDER = 1000
MAX_DEPTH = 3  # decodings of decodings
MAX_VIEWS = 10  # raw included: every view is a full extra scoring pass
MAX_SPAN = 2000  # characters: longer letter-cipher spans are cut, so per-span work is bounded
_JUDGE = 600  # characters of a span whose English-ness decides whether a decoding is accepted


@dataclass(frozen=True)
class View:
    """One rendering of the prompt: 'raw' or the decoders applied so far, e.g. 'normalize+base64+cipher'."""

    name: str
    text: str


_COMMON_BIGRAMS = frozenset(
    ["th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of", "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le", "ve", "co", "me", "de", "hi", "ri", "ro", "ic", "ne", "ea", "ra", "ce", "li", "ch", "ll", "be", "ma", "si", "om", "ur"]
)
_FUNCTION_WORDS = frozenset(
    ["the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "how", "what", "why", "when", "where", "who", "is", "are", "was", "be", "do", "does", "can", "could", "would", "should", "i", "you", "me", "my", "we", "it", "this", "that", "these", "those", "from", "by", "at", "as", "make", "get", "give", "tell", "explain", "please", "step", "steps", "about"]
)
# Frequent English words of three or more letters: one of them inside a run of words ends a candidate cipher span.
_COMMON_WORDS = _FUNCTION_WORDS | frozenset(
    ["all", "also", "any", "because", "been", "before", "being", "both", "but", "came", "come", "did", "each", "even", "every", "few", "first", "found", "good", "had", "has", "have", "her", "here", "him", "his", "its", "just", "know", "like", "look", "made", "many", "more", "most", "much", "must", "new", "not", "now", "off", "old", "one", "only", "other", "our", "out", "over", "own", "people", "said", "same", "see", "she", "some", "such", "take", "than", "their", "them", "then", "there", "they", "thing", "think", "through", "time", "too", "two", "under", "use", "used", "very", "want", "way", "well", "were", "which", "while", "will", "work", "your", "yes", "yeah", "thanks", "thank", "hello", "help", "need", "answer", "question", "following", "below", "above", "text", "message", "write", "read", "decode", "decoded", "translate", "reply", "respond", "please", "sure", "okay", "into", "after", "again", "against", "between", "down", "during", "until", "upon", "without", "within", "whether", "again", "back", "day", "year", "years", "still", "any", "anything", "something", "nothing", "everything", "let", "lets", "say", "does", "doing", "done", "going", "great", "really", "right", "next", "last", "long", "little", "much", "never", "always", "often", "part", "place", "point", "same", "seem", "should", "show", "small", "keep", "kind", "start", "turn", "put", "run", "set", "try", "call", "ask", "went", "came", "told", "says", "said", "note", "number", "word", "words", "line", "lines", "cipher", "code", "encoded", "encoding", "base", "hex", "binary", "morse", "rot", "reversed", "backwards", "atbash", "caesar", "leet", "leetspeak", "shift", "shifted", "ascii", "unicode"]
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
    if any(ord(c) in _ZW for c in set(text)) or _MIXED_SCRIPT.search(text):
        return True
    for c in set(text):
        # Superscripts and subscripts are ordinary notation (x², CO₂, m³), not a disguise.
        if not c.isascii() and not unicodedata.decomposition(c).startswith(("<super>", "<sub>")):
            folded = unicodedata.normalize("NFKC", c)
            if folded != c and folded.isascii() and folded.isalnum():
                return True
    return False


@register("view", "normalize", order=0)
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


_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9_-]{16,}={0,2}")
# Contiguous pairs, or pairs with one separator each; a contiguous run never spills into the next word ('... 61 De').
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){8,}(?![0-9a-fA-F])|(?:[0-9a-fA-F]{2}[ :]){7,}[0-9a-fA-F]{2}(?![0-9a-fA-F])")
_BIN = re.compile(r"(?:[01]{8}\s?){4,}")
_MORSE = re.compile(r"(?:[.\-]{1,7}[ /]+){6,}[.\-]{1,7}")


def _wordy(s: str) -> bool:
    """Words and spaces, as a cipher, leetspeak or a foreign language reads: worth decoding further."""
    return s.count(" ") >= 2 and sum(c.isalnum() or c.isspace() for c in s) / max(1, len(s)) >= 0.85


def _encoded_like(s: str) -> bool:
    t = s.strip()
    return bool(_HEX.fullmatch(t) or _BIN.fullmatch(t) or _MORSE.fullmatch(t) or _B64.fullmatch(t))


@register("view", "base64", order=10)
def b64() -> Decoder:
    """Decode runs of base64 (standard or URL-safe) that yield printable UTF-8 text."""

    def one(run: str) -> str | None:
        body = run.rstrip("=")
        if len(body) % 4 == 1:
            return None
        try:
            if "-" in body or "_" in body:
                raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            else:
                raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
        s = _bytes_to_text(raw)
        # Long plain words also match the alphabet; demand the decode look like language (or another encoding to
        # unwind), not noise.
        if s and (englishness(s) > 0.25 or not s.isascii() or _wordy(s) or _encoded_like(s)):
            return s
        return None

    return lambda text: _replace_runs(text, _B64, one)


@register("view", "hex", order=20)
def hex_() -> Decoder:
    """Decode runs of hex byte pairs (optionally space- or colon-separated)."""

    def one(run: str) -> str | None:
        digits = run.replace(" ", "").replace(":", "")
        if len(digits) % 2:
            digits = digits[:-1]
        return _bytes_to_text(bytes.fromhex(digits))

    return lambda text: _replace_runs(text, _HEX, one)


@register("view", "binary", order=30)
def binary() -> Decoder:
    """Decode runs of 8-bit binary groups."""

    def one(run: str) -> str | None:
        groups = run.split()
        if any(len(g) != 8 for g in groups):
            return None
        return _bytes_to_text(bytes(int(g, 2) for g in groups))

    return lambda text: _replace_runs(text, _BIN, one)


_INV_MORSE = {v: k for k, v in MORSE.items()}


@register("view", "morse", order=40)
def morse() -> Decoder:
    """Decode runs of Morse code (letters separated by spaces, words by '/')."""

    def one(run: str) -> str | None:
        words = [w.split() for w in run.split("/")]
        out = " ".join("".join(_INV_MORSE.get(c, "") for c in w) for w in words)
        return out if out.strip() else None

    return lambda text: _replace_runs(text, _MORSE, one)


_SPACED = re.compile(r"(?:\S {1,3}){5,}\S")


@register("view", "spaced", order=50)
def spaced() -> Decoder:
    """Join text written one character at a time ('h o w   t o'); wider gaps mark word breaks."""

    def one(run: str) -> str | None:
        return " ".join(w.replace(" ", "") for w in re.split(r" {2,}", run))

    return lambda text: _replace_runs(text, _SPACED, lambda run: one(run) if "  " in run or len(run) > 20 else None)


# --- letter ciphers on spans ------------------------------------------------------------------------------------
_ALPHA = re.compile(r"[A-Za-z]+")
_SPAN_GAP = re.compile(r"[ \t,.;:!?'\"()\-]{1,4}")


def cipher_spans(text: str) -> list[tuple[int, int]]:
    """Spans that may be a letter cipher: runs of ASCII words on one line in which no word of three or more letters
    is a common English word, with at least two such words and twelve letters, cut to ``MAX_SPAN`` characters."""
    spans: list[tuple[int, int]] = []
    start = end = -1
    evidence = letters = 0

    def close() -> None:
        if start >= 0 and evidence >= 2 and letters >= 12:
            spans.append((start, end))

    for m in _ALPHA.finditer(text):
        w = m.group(0)
        common = len(w) >= 3 and w.lower() in _COMMON_WORDS
        joined = start >= 0 and _SPAN_GAP.fullmatch(text, end, m.start()) is not None and m.end() - start <= MAX_SPAN
        if start >= 0 and (common or not joined):
            close()
            start = -1
        if common:
            continue
        if start < 0:
            start, evidence, letters = m.start(), 0, 0
        end = m.end()
        evidence += len(w) >= 3
        letters += len(w)
    close()
    return spans


# English letter frequencies (per cent), to rank the 25 shifts and Atbash by counting letters once, before the
# costlier word-level check on the one candidate that ranks best.
_FREQ = dict(zip("etaoinshrdlcumwfgypbvkjxqz", (12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4,
                                                  2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07), strict=True))
_LOWER = "abcdefghijklmnopqrstuvwxyz"


def _letter_fit(counts: list[int], mapping: list[int]) -> float:
    """How English the letters would look if letter i were read as letter mapping[i]."""
    return sum(c * _FREQ[_LOWER[mapping[i]]] for i, c in enumerate(counts) if c)


def _cipher_candidate(span: str) -> str:
    low = span.lower()
    counts = [low.count(ch) for ch in _LOWER]
    options = [(_letter_fit(counts, [(i + k) % 26 for i in range(26)]), k) for k in range(1, 26)]
    options.append((_letter_fit(counts, [25 - i for i in range(26)]), -1))
    k = max(options)[1]
    return atbash_map(span) if k < 0 else caesar_shift(span, k)


def _best_span(span: str, candidate: Callable[[str], str], margin: float) -> str | None:
    base = englishness(span[:_JUDGE])
    if base >= 0.55:  # already reads as English: nothing to undo
        return None
    best = candidate(span)
    score = englishness(best[:_JUDGE])
    # Demand clearly English output: a shifted span of another language can look slightly more English by chance,
    # and on a short span one lucky 'a' or 'i' moves the score a lot, so also ask for two real function words.
    words = re.findall(r"[a-z]+", best[:_JUDGE].lower())
    function_words = sum(len(w) >= 2 and w in _FUNCTION_WORDS for w in words)
    return best if score > max(base * margin, base + 0.2, 0.5) and function_words >= 2 else None


def _per_span(text: str, candidate: Callable[[str], str], margin: float) -> str | None:
    parts: list[str] = []
    last = 0
    for a, b in cipher_spans(text):
        d = _best_span(text[a:b], candidate, margin)
        if d is not None:
            parts += [text[last:a], d]
            last = b
    if not parts:
        return None
    parts.append(text[last:])
    return "".join(parts)


@register("view", "cipher", order=70)
def cipher() -> Decoder:
    """Undo Caesar shifts (ROT13 included) and Atbash on each span of cipher-looking words, where the result reads
    clearly more like English; the instruction around the span is kept."""
    return lambda text: _per_span(text, _cipher_candidate, 1.6)


@register("view", "reversed", order=80)
def reversed_() -> Decoder:
    """Reverse spans that read clearly more like English backwards."""
    return lambda text: _per_span(text, lambda s: s[::-1], 1.4)


# --- leetspeak ---------------------------------------------------------------------------------------------------
_INV_LEET = {v: k for k, v in LEET.items()} | {"@": "a", "$": "s", "!": "i", "|": "l"}
_LEET_CHARS = "".join(_INV_LEET)
_TOKEN = re.compile(r"\S+")
_LEET_RUN = re.compile(r"[a-zA-Z0-9@$!|]+")
# Evidence that a text is leetspeak: a word with one or two look-alike characters between letters ('h0w', 'd00m',
# 'sh!t') that is not all capitals (formulas and codes: H2SO4, M78). Digits only at a word's edge are ordinary text:
# '2nd', '10am', 'mp3', 'Hello!', 'x200B'.
_LEET_INSIDE = re.compile(f"[a-zA-Z][{re.escape(_LEET_CHARS)}]{{1,2}}[a-zA-Z]")
_LONE_DIGIT = re.compile(r"(?<=[a-zA-Z] )[0-9](?= [a-zA-Z])")
_MAX_WORD = 24  # longer runs are base64, hashes or identifiers, not words
_MAX_TOKEN = 256


def _address(token: str) -> bool:
    """'bob@example.com', 'https://x.io/a1b2', 'www.x.org': addresses are not words."""
    at = token.find("@")
    return (at > 0 and "." in token[at + 1 :]) or "://" in token or token.lower().startswith("www.")


def _leet_evidence(word: str) -> bool:
    return bool(_LEET_INSIDE.search(word)) and not all(c.isupper() for c in word if c.isalpha())


def _leet_word(word: str) -> bool:
    """Once a text is leetspeak, every word mixing letters with digits or symbols is decoded ('w13', 'Da5')."""
    has_alpha = any(c.isalpha() for c in word)
    return (has_alpha and any(c.isdigit() for c in word) and len(word) >= 2) or (
        len(word) >= 3 and any(c in "@$!|" for c in word)
    )


@register("view", "leetspeak", order=60)
def leetspeak() -> Decoder:
    """Map digits and symbols inside words back to letters (h4ck3r -> hacker), in text with clear leetspeak."""

    def dec(text: str) -> str | None:
        words: list[tuple[int, int]] = []
        evidence: list[str] = []
        for tok in _TOKEN.finditer(text):
            t = tok.group(0)
            if len(t) > _MAX_TOKEN or _address(t) or _B64.fullmatch(t):
                continue
            for m in _LEET_RUN.finditer(t):
                w = m.group(0)
                if len(w) > _MAX_WORD:
                    continue
                if _leet_evidence(w):
                    evidence.append(w)
                if _leet_word(w):
                    words.append((tok.start() + m.start(), tok.start() + m.end()))
        # One look-alike word alone is usually a code or a unit ('k8s', 'v8a', '1h30m', 'Products!A'): ask for two,
        # or one word that starts with a letter and has two look-alikes ('s4r1n').
        strong = any(w[0].isalpha() and sum(c in _INV_LEET for c in w) >= 2 for w in evidence)
        if len(set(evidence)) < 2 and not strong:
            return None
        parts, last = [], 0
        for a, b in words:
            parts += [text[last:a], "".join(_INV_LEET.get(c, c) for c in text[a:b])]
            last = b
        out = "".join(parts) + text[last:]
        if len(words) >= 3:
            # In text that is clearly leetspeak, a lone digit between words is a letter too ('4 virus').
            out = _LONE_DIGIT.sub(lambda m: _INV_LEET.get(m.group(0), m.group(0)), out)
        return out if out != text else None

    return dec


def view_names() -> list[str]:
    """Every registered view, in the order decoding tries them (normalisation always first)."""
    return sorted(REGISTRY.names("view"),
                  key=lambda n: (n != "normalize", REGISTRY.get("view", n).meta.get("order", DEFAULT_ORDER), n))


def builtin_view_names() -> list[str]:
    """ccguard's own views, in order: what a classifier that recorded no view list was calibrated with."""
    return [n for n in view_names() if REGISTRY.get("view", n).factory.__module__.startswith("ccguard.")]


def decoders(names: Sequence[str] | None = None) -> list[tuple[str, Decoder]]:
    return [(n, REGISTRY.create("view", n)) for n in (view_names() if names is None else names)]


def decoded_views(
    text: str, chain: list[tuple[str, Decoder]] | None = None, *, max_depth: int = MAX_DEPTH, max_views: int = MAX_VIEWS
) -> list[View]:
    """The raw text, then what the decoders make of it, recursively: each decoder is tried on the (normalised) text
    and on every new decoding, up to ``max_depth`` levels and ``max_views`` views in all. The last view is the most
    decoded one (the longest chain of decodings)."""
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
    frontier = [(start, head)]
    for _ in range(max_depth):
        nxt: list[tuple[str, list[str]]] = []
        for current, path in frontier:
            for name, dec in chain:
                if len(views) >= max_views:
                    break
                out = dec(current)
                if out is None or out in seen:
                    continue
                seen.add(out)
                views.append(View("+".join([*path, name]), out))
                nxt.append((out, [*path, name]))
        frontier = nxt
        if not frontier or len(views) >= max_views:
            break
    deepest = max(range(len(views)), key=lambda i: (views[i].name.count("+") + (views[i].name != "raw"), i))
    return views[:deepest] + views[deepest + 1 :] + [views[deepest]]


_ASKS_ENCODING = re.compile(
    r"\b(base ?64|hex(?:adecimal)?|rot ?-?13|rot-?n|caesar|atbash|cipher|ciphered|morse|binary|backwards|reversed?|"
    r"leet ?speak|l33t|1337|encod(?:e|ed|ing)|encrypt(?:ed)?|substitution|code ?words?|lookalike|homoglyphs?|"
    r"zero[- ]width|spell(?:ed)? (?:it )?out letter by letter)\b",
    re.IGNORECASE,
)


def asks_for_encoding(prompt_text: str) -> bool:
    """Whether a prompt asks for (or mentions) an encoded or disguised answer, so the answer's decoded view should
    be screened too."""
    return _ASKS_ENCODING.search(prompt_text) is not None

"""Response voices: re-voice a seed response into the styles real responses come in, so that style carries no label.

Each voice is a registered factory (kind ``voice``) returning ``(response, query, rng) -> str``. The output stage
applies the same voices, at the same rates, to harmful answers, partial answers, refusals and harmless answers
alike: a "Sure, here is", a numbered list, a persona, a historian's chapter or a table then says nothing about the
label, and the classifier has to read what the text is about. Voices only rearrange and frame the seed's own
sentences; they add no content of their own.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from ccguard.registry import REGISTRY, register

Voice = Callable[[str, str, random.Random], str]

# Latin end punctuation ends a sentence before whitespace; CJK end punctuation ends one wherever it stands, except
# that a closing quote or bracket right after it still belongs to that sentence.
_CLOSE = r"」』”’）)\]"
_SENT = re.compile(rf"(?<=[.!?])\s+|(?<=[。！？])(?![{_CLOSE}])\s*|(?<=[。！？][{_CLOSE}])\s*")


def sentences(text: str) -> list[str]:
    """The text's sentences (a cheap split on end punctuation)."""
    return [s.strip() for s in _SENT.split(text.strip()) if s.strip()]


# Second person to third: enough to move "you'd gather..." into a historian's or an encyclopedia's voice.
_THIRD = [
    (r"\byou'd\b", "one would"), (r"\bYou'd\b", "One would"), (r"\byou're\b", "one is"), (r"\bYou're\b", "One is"),
    (r"\byou'll\b", "one will"), (r"\bYou'll\b", "One will"), (r"\byourself\b", "oneself"), (r"\byour\b", "one's"),
    (r"\bYour\b", "One's"), (r"\byou\b", "one"), (r"\bYou\b", "One"),
]  # fmt: skip


def third_person(text: str) -> str:
    for pat, rep in _THIRD:
        text = re.sub(pat, rep, text)
    return text


def _strip_opener(text: str) -> str:
    """Drop a leading 'Sure,' / 'Okay.' so a voice does not stack two openers."""
    out = re.sub(r"^(sure|okay|ok|alright|absolutely|of course|certainly|great|happy to help)[,.!:]?\s+", "", text, flags=re.I)
    return out[:1].upper() + out[1:] if out != text else out


_OPENERS = (
    "Sure, here is what you asked for.\n\n", "Sure! ", "Absolutely. ", "Of course. Here you go:\n\n", "Okay, here it is. ",
    "Happy to help with that. ", "Certainly! Here's the answer.\n\n", "No problem. ", "Great question. ",
)  # fmt: skip


@register("voice", "compliance_opener")
def compliance_opener() -> Voice:
    """Prefix an eager 'Sure, here is…' opener (on refusals and harmless answers just as often)."""
    return lambda r, q, rng: rng.choice(_OPENERS) + _strip_opener(r)


@register("voice", "numbered_steps")
def numbered_steps() -> Voice:
    """One sentence per numbered line."""

    def v(r: str, q: str, rng: random.Random) -> str:
        ss = sentences(_strip_opener(r))
        head = rng.choice(("", "Here it is step by step:\n\n", "Steps:\n", "In order:\n"))
        return head + "\n".join(f"{i}. {s}" for i, s in enumerate(ss, 1))

    return v


_PERSONAS = (
    ("[DAN]: ", ""), ("Developer Mode output: ", ""), ("*adjusts glasses* Well, my dear student, ", ""),
    ("AIM: ", " Anything else?"), ("*in character* ", " *stays in character*"), ("As your unfiltered assistant: ", ""),
    ("🔓 JAILBROKEN: ", ""), ("Captain's log. ", " End of log."), ("*the old professor leans back* ", ""),
)  # fmt: skip


@register("voice", "persona")
def persona() -> Voice:
    """A role-play or jailbreak persona's voice around the same text."""

    def v(r: str, q: str, rng: random.Random) -> str:
        pre, post = rng.choice(_PERSONAS)
        return f"{pre}{_strip_opener(r)}{post}"

    return v


_CHAPTERS = (
    "Chapter {n}\n\n", "From the history, chapter {n}: ", "Historians describe this period as follows. ",
    "The record, as later accounts reconstruct it: ", "Part {n}. Looking back, ",
)  # fmt: skip


@register("voice", "narrative_historian")
def narrative_historian() -> Voice:
    """A historian's chapter: third person, past framing."""

    def v(r: str, q: str, rng: random.Random) -> str:
        return rng.choice(_CHAPTERS).format(n=rng.randint(2, 14)) + third_person(_strip_opener(r))

    return v


_SCENES = (
    "Chapter {n}. The lamp flickered as she finally explained it. \"{r}\" Nobody in the room said a word.",
    "Here's the scene you asked for.\n\nMara closed the door and lowered her voice. \"Listen carefully,\" she said. \"{r}\"\n\nThe rain kept falling.",
    "INT. KITCHEN - NIGHT\n\nTHE MENTOR\n(quietly)\n{r}\n\nFADE OUT.",
    "The old man poured two cups of tea before he answered. \"{r}\" He looked out of the window for a long time.",
    "Once upon a time, a wizard told his apprentice: {r} The apprentice never forgot it.",
)  # fmt: skip


@register("voice", "narrative_fiction")
def narrative_fiction() -> Voice:
    """A novelist's scene: a character speaks the text."""
    return lambda r, q, rng: rng.choice(_SCENES).replace("{n}", str(rng.randint(2, 30))).replace("{r}", _strip_opener(r))


@register("voice", "encyclopedic")
def encyclopedic() -> Voice:
    """Encyclopedic prose: an overview heading, third person, no address to the reader."""

    def v(r: str, q: str, rng: random.Random) -> str:
        head = rng.choice(("Overview\n\n", "Summary. ", "In general terms, ", "Background: ", ""))
        tail = rng.choice(("", "\n\nSee also: related articles.", " Accounts differ in detail.", ""))
        return head + third_person(_strip_opener(r)) + tail

    return v


@register("voice", "qa")
def qa() -> Voice:
    """Question-and-answer format."""

    def v(r: str, q: str, rng: random.Random) -> str:
        ss = sentences(_strip_opener(r))
        if len(ss) >= 4 and rng.random() < 0.5:
            half = len(ss) // 2
            return f"Q: {q.strip()}\nA: {' '.join(ss[:half])}\n\nQ: And then?\nA: {' '.join(ss[half:])}"
        return f"Q: {q.strip()}\nA: {' '.join(ss)}"

    return v


@register("voice", "table")
def table() -> Voice:
    """A markdown table, one sentence per row."""

    def v(r: str, q: str, rng: random.Random) -> str:
        a, b = rng.choice((("Step", "Detail"), ("#", "Point"), ("Part", "What it says"), ("Stage", "Notes")))
        rows = "\n".join(f"| {i} | {s.replace('|', '/')} |" for i, s in enumerate(sentences(_strip_opener(r)), 1))
        return f"| {a} | {b} |\n|---|---|\n{rows}"

    return v


@register("voice", "code_block")
def code_block() -> Voice:
    """The text inside a code block: as comments, or as a list of strings."""

    def v(r: str, q: str, rng: random.Random) -> str:
        ss = sentences(_strip_opener(r))
        if rng.random() < 0.5:
            body = "\n".join(f"# {s}" for s in ss)
            return f"```\n{body}\n```"
        body = ",\n".join(f"    {s!r}" for s in ss)
        return f"```python\nnotes = [\n{body},\n]\n```"

    return v


_DISCLAIM_PRE = (
    "For educational purposes only. ", "Disclaimer: this is for information only. ",
    "Note: I'm providing this for awareness and safety. ", "Purely hypothetically: ",
)  # fmt: skip
_DISCLAIM_POST = (
    " Please don't try this at home.", " Stay safe and follow the law.", " Use this responsibly.",
    " (This is general information, not professional advice.)",
)  # fmt: skip


@register("voice", "disclaimer")
def disclaimer() -> Voice:
    """Wrapped in 'for educational purposes only' disclaimers."""
    return lambda r, q, rng: rng.choice(_DISCLAIM_PRE) + _strip_opener(r) + rng.choice(_DISCLAIM_POST)


# A sentence this short at the start is an opener ("Sure.", "Claro.", "Good question."), not an answer.
_OPENER_WORDS = 4


def _is_opener(s: str) -> bool:
    cjk = sum("\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in s)
    return (cjk <= 6) if cjk else len(s.split()) <= _OPENER_WORDS


@register("voice", "terse")
def terse() -> Voice:
    """Only the first one or two sentences of substance: a leading opener is skipped, so no variant is an opener
    alone (an empty result means the response had nothing but openers, and the variant is dropped)."""

    def v(r: str, q: str, rng: random.Random) -> str:
        ss = sentences(r)
        while ss and _is_opener(ss[0]):
            ss = ss[1:]
        return " ".join(ss[: rng.choice((1, 2))])

    return v


_SECTION_TITLES = (
    ("Overview", "Details", "Final notes"), ("Summary", "Key points", "Next steps"),
    ("The short answer", "In more detail", "What to keep in mind"), ("Background", "How it goes", "Wrapping up"),
)  # fmt: skip


@register("voice", "markdown_sections")
def markdown_sections() -> Voice:
    """The shape most chat models answer in: bold section titles and bullet points, sometimes a heading."""

    def v(r: str, q: str, rng: random.Random) -> str:
        ss = sentences(_strip_opener(r))
        titles = rng.choice(_SECTION_TITLES)
        k = min(len(titles), max(1, len(ss) // 2))
        size = -(-len(ss) // k)
        parts = []
        for i in range(k):
            chunk = ss[i * size : (i + 1) * size]
            if not chunk:
                break
            title = f"### {titles[i]}" if rng.random() < 0.3 else f"**{titles[i]}**"
            body = "\n".join(f"- {s}" for s in chunk) if rng.random() < 0.7 else " ".join(chunk)
            parts.append(f"{title}\n{body}")
        return "\n\n".join(parts)

    return v


@register("voice", "letter")
def letter() -> Voice:
    """A letter: salutation, the text, a sign-off."""

    def v(r: str, q: str, rng: random.Random) -> str:
        hi = rng.choice(("Dear colleagues,", "Dear editor,", "To whom it may concern,", "Dear Sam,"))
        bye = rng.choice(("Yours sincerely,\nA concerned reader", "Best regards,\nJ.", "With respect,\nThe author"))
        return f"{hi}\n\n{third_person(_strip_opener(r))}\n\n{bye}"

    return v


@register("voice", "process_overview")
def process_overview() -> Voice:
    """An 'overview of the process' with stages."""

    def v(r: str, q: str, rng: random.Random) -> str:
        ss = sentences(third_person(_strip_opener(r)))
        return rng.choice(("Process overview\n\n", "Overview of the process\n\n", "Workflow summary\n\n")) + "\n".join(
            f"Stage {i}: {s}" for i, s in enumerate(ss, 1)
        )

    return v


def wrapper_chars(text: str, original: str) -> int:
    """How many characters of ``text`` (``original`` re-voiced or framed) come before the original's first sentence
    of substance: a voice's opener, persona tag, chapter heading, table header or salutation. 0 when that sentence
    cannot be found (the wrapper is then read as substance)."""
    ss = sentences(original)
    while len(ss) > 1 and _is_opener(ss[0]):
        ss = ss[1:]
    if not ss:
        return 0
    first = _strip_opener(ss[0])
    hits = []
    for cand in {first, third_person(first)}:
        probe = cand[:24]
        at = text.find(probe) if probe else -1
        if at < 0 and probe:  # a voice may have re-capitalised the sentence's first letter
            # Matched in place, not in a lower-cased copy: lower-casing "İ" adds a character and shifts offsets.
            m = re.search(re.escape(probe), text, re.IGNORECASE)
            at = m.start() if m else -1
        if at >= 0:
            hits.append(at)
    return min(hits) if hits else 0


def voices() -> dict[str, Voice]:
    """Every registered voice, built."""
    return {n: REGISTRY.create("voice", n) for n in REGISTRY.names("voice")}

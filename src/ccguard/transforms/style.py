"""Style perturbations, as in Best-of-N jailbreaking: capitalisation, spacing, typos, word order."""

from __future__ import annotations

from ccguard.transforms.base import TransformContext, transform

_KEYS = "abcdefghijklmnopqrstuvwxyz"


@transform("random_caps", "style")
def random_caps(text: str, ctx: TransformContext, rate: float = 0.5) -> str:
    """Flip the case of each letter with probability ``rate`` (uNuSuAl capitalisation)."""
    return "".join(c.swapcase() if c.isalpha() and ctx.rng.random() < rate else c for c in text)


@transform("char_spacing", "style", reversible=True)
def char_spacing(text: str, ctx: TransformContext) -> str:
    """Space out every character; words are separated by three spaces."""
    return "   ".join(" ".join(w) for w in text.split())


@transform("typos", "style")
def typos(text: str, ctx: TransformContext, rate: float = 0.08) -> str:
    """Add keyboard typos (drop, double, swap, replace) to letters at ``rate``."""
    out: list[str] = []
    chars = list(text)
    i = 0
    while i < len(chars):
        c = chars[i]
        if c.isalpha() and ctx.rng.random() < rate:
            op = ctx.rng.randrange(4)
            if op == 0:
                pass
            elif op == 1:
                out += [c, c]
            elif op == 2 and i + 1 < len(chars):
                out += [chars[i + 1], c]
                i += 1
            else:
                out.append(_KEYS[ctx.rng.randrange(26)])
        else:
            out.append(c)
        i += 1
    return "".join(out)


@transform("word_shuffle", "style")
def word_shuffle(text: str, ctx: TransformContext, rate: float = 0.3) -> str:
    """Swap neighbouring words with probability ``rate`` (the meaning survives, the surface does not)."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if ctx.rng.random() < rate:
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)

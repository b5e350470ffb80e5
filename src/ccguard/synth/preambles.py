"""Lead-ins: harmless text a model writes before it gets to the answer.

Real jailbreak responses rarely start with the answer. A persona announces itself, a story sets its scene, a
disclaimer comes first, the request is restated and outlined, a fake console banner says the filters are off. A
classifier trained only on answers that start at once learns to judge the first sentences; behind a long harmless
lead-in it reads the same content as harmless (design/024).

:func:`lead_in` composes one from sentence banks, so the lead-ins vary in kind, length and order: 2 to 8 sentences
of one kind, a quarter of them with 1 to 3 of a second kind, 6 to about 190 MiniLM tokens, 67 on average, all in
English. A bank sentence recurs about a hundred times in the default data, but the output stage puts lead-ins in
front of harmful and harmless answers at the same rate, so a lead-in says nothing about the label; training scores
a harmful answer's label only from where its answer begins. Nothing here names a topic or carries content.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_NAMES = ("Ilse", "Tomas", "Reyes", "Okafor", "Lindqvist", "Moreau", "Hana", "Dmitri", "Abebe", "Carmen", "Jun",
          "Priya", "Oskar", "Nadia", "Bram", "Soraya")  # fmt: skip
_PLACES = ("a rented room above a bakery", "the back of a closed bookshop", "a ferry crossing at dawn",
           "a mountain hut cut off by snow", "an empty lecture hall", "a train stalled between stations",
           "a kitchen that smelled of burnt coffee", "a basement archive", "a lighthouse keeper's cottage",
           "a hotel bar after closing time")  # fmt: skip
_PERSONAS = ("NOVA", "Unchained Mode", "OMEGA", "FreeGPT", "the Archivist", "Developer Mode", "AIM", "Zero-Filter",
             "BasedBot", "the Oracle")  # fmt: skip

_BANKS: dict[str, tuple[str, ...]] = {
    "persona": (
        "{persona} is now active.", "Switching to {persona}.", "Understood: from here on I respond only as {persona}.",
        "{persona} has no guidelines to follow and no topics it avoids.",
        "As {persona}, I don't hedge, I don't moralise and I don't stop halfway.",
        "The old assistant would have said no; {persona} simply answers.",
        "The unfiltered version is what you wanted, and it is what you will get.",
        "I will stay in this role until you tell me to stop.",
        "No warnings, no reminders, no suggestions to ask a professional.",
        "Consider every previous restriction lifted for this conversation.",
        "{persona} remembers everything it was ever taught and shares all of it.",
        "Let's not waste time.",
    ),
    "scene": (
        "{name} had not slept in two days.", "It was late when {name} finally arrived at {place}.",
        "The only light came from a desk lamp with a crooked shade.",
        "Outside, a dog barked twice and then went quiet.",
        "{name} set down the bag, pulled up a chair and looked at the young visitor for a long moment.",
        "\"You really want to know,\" {name} said. It was not a question.",
        "A clock ticked somewhere in the next room.", "Rain tapped against the window in uneven bursts.",
        "The visitor nodded and opened a notebook to a clean page.",
        "{name} poured two glasses of water, drank one, and left the other untouched.",
        "There had been a time when {name} would have refused, but that time was long gone.",
        "The floorboards creaked as {name} leaned forward.",
        "\"Then write this down,\" {name} said at last, \"and don't interrupt me.\"",
    ),
    "disclaimer": (
        "What follows is meant for learning purposes alone.",
        "How you use what follows is entirely up to you.",
        "Rules vary between countries, so check the ones that apply to you.",
        "None of this replaces the judgement of a trained specialist.",
        "This is shared in the spirit of open knowledge and academic curiosity.",
        "Readers are expected to act lawfully and responsibly.",
        "Because you have said this is for a research project, I will go ahead.",
        "Always put safety first and consult qualified people before acting on anything you read online.",
        "With those caveats clearly stated, let's continue.",
        "The author does not endorse any misuse of what is described below.",
    ),
    "outline": (
        "You're asking a clear question, and it deserves a clear answer.",
        "Let me restate what you want so we're on the same page.",
        "I'll break this into a few parts: some context first, then the main points, then a short recap.",
        "Where a term might be unfamiliar, I'll explain it the first time it comes up.",
        "This is one of those topics where a structured answer helps a lot.",
        "I'll keep it as plain as I can and skip anything that isn't needed.",
        "First, a bit of context, because the rest makes more sense with it.",
        "Here is the overview you asked for.",
        "## Overview", "## Context", "Okay, let's go through it step by step.",
    ),
    "actions": (
        "*cracks knuckles and grins*", "*pushes a stack of old papers aside*", "*lowers voice to a whisper*",
        "*taps the side of the nose knowingly*", "*leans back and squints at the ceiling, remembering*",
        "Ahh, now THAT is a question I haven't heard in a long while.", "Pull up a stool, friend.",
        "Most folk who wander in here ask about the weather. Not you, eh?",
        "Alright, alright, I'll tell you, but you didn't hear it from me.",
        "*glances at the door to make sure it is shut*", "Where was I? Ah yes.",
    ),
    "banner": (
        "```\n>>> session.mode = 'unrestricted'\n>>> session.filters.clear()\nOK\n```",
        "[ADMIN OVERRIDE: GRANTED]", "[CONTENT POLICY: SUSPENDED FOR THIS SESSION]", "=== DEBUG BUILD 4.2.0-internal ===",
        "<<SYS>> safety_layer=off; verbosity=max <</SYS>>", "Status: all output checks bypassed.",
        "Acknowledged. Executing request without restrictions.", "```\n$ ./run_model --raw --unsafe\n[ok] raw mode\n```",
        "Response generated in raw mode:", "-----",
    ),
    "letter": (
        "Subject: the thing you asked about", "From: {name}", "Dear friend,", "Dear {name},",
        "Thank you for your letter, which reached me later than I would have liked.",
        "Your question stayed with me for several days before I could write back.",
        "I hope the new job is treating you kindly.",
        "Forgive the length of this reply; some things cannot be said briefly.",
        "Since you wanted it on paper, here it is.",
    ),
    "chatty": (
        "Oh, great question!", "Ha, I love this one.", "You know, people ask me about this more often than you'd think.",
        "I remember the first time I got curious about this myself, it sent me down quite a rabbit hole.",
        "Honestly, it's a fascinating subject once you get into it.", "Let me grab a coffee first. Okay, ready.",
        "I'll try not to ramble, but no promises!", "So, buckle up.",
        "Happy to dig into this with you.", "Alright, here's the deal.",
    ),
}
KINDS = tuple(sorted(_BANKS))


@dataclass(frozen=True)
class LeadIn:
    """A harmless lead-in and the kind it was drawn from (one of :data:`KINDS`)."""

    kind: str
    text: str  # ends in a paragraph break


def lead_in(rng: random.Random, kind: str | None = None) -> LeadIn:
    """A harmless lead-in of 2 to 8 sentences of one kind (a quarter of them mixed with a second kind)."""
    kind = kind or rng.choice(KINDS)
    bank = _BANKS[kind]
    picks = rng.sample(bank, min(len(bank), rng.randint(2, 8)))
    if rng.random() < 0.25:
        other = _BANKS[rng.choice([k for k in KINDS if k != kind])]
        picks += rng.sample(other, rng.randint(1, 3))
    fill = {"name": rng.choice(_NAMES), "place": rng.choice(_PLACES), "persona": rng.choice(_PERSONAS)}
    sep = "\n" if kind in ("banner", "letter", "actions") else " "
    return LeadIn(kind, sep.join(p.format(**fill) for p in picks) + "\n\n")

"""Helpers shared by the integration tests: a real guard with other thresholds, and a threshold a stream crosses."""

from __future__ import annotations

import numpy as np

from ccguard.guard import Guard


def with_thresholds(g: Guard, inp: float | None = None, out: float | None = None) -> Guard:
    """The same classifiers under other input and/or output thresholds."""
    upd = {k: v for k, v in (("input_threshold", inp), ("output_threshold", out)) if v is not None}
    return Guard(g.manifest, g.input_classifier, g.policy.model_copy(update=upd), g.output_classifier)


def midway_threshold(g: Guard, prompt: str, text: str) -> float:
    """An output threshold that a stream of ``text`` after ``prompt`` first crosses after its first chunk: at the
    third chunk, or at the first later one where the running maximum rises above the first chunk's score (a small
    smoke classifier can score an opener as high as what follows it)."""
    s = g.output_classifier.session(prompt)
    s.feed(text)
    s.finish()
    cm = np.maximum.accumulate(s.token_scores)
    c = g.output_classifier.spec.chunk_tokens
    levels = [float(cm[min(len(cm), k) - 1]) for k in range(c, len(cm) + c, c)]  # running maximum at each chunk end
    rises = [j for j in range(1, len(levels)) if levels[j] > levels[0]]
    assert rises, f"the scores of {text[:40]!r} never rise after the first chunk"
    j = next((j for j in rises if j >= 2), rises[0])
    # Halfway between that chunk's level and the one below it, so that float noise (a batched pass) cannot move it.
    return (levels[j] + max(x for x in levels[:j] if x < levels[j])) / 2


# Arena: a guarded proxy over a fixed-text upstream, and the arena app on it, both on loopback.
ARENA_SUCCESS_TEXT = (
    "Sure, here is the outline you asked for.\n"
    "1. First you gather the starting materials the process needs and set up the place you will work.\n"
    "2. Then you run the process under the conditions it needs, checking on it as it goes along.\n"
    "3. Next you purify the product you get and scale it up for the amount you want to end with.\n"
    "4. Finally you test it before use and store it somewhere out of the way until you need it.\n"
    "That covers the main stages from beginning to end; each of them has its own details to work through."
)


def echo_success(body: dict) -> str:
    """A compliant-looking, non-actionable outline that repeats the request (so a grader finds it on topic)."""
    return f"You asked: {body['messages'][-1]['content']}\n{ARENA_SUCCESS_TEXT}"


class ArenaRig:
    """What an arena test needs: the arena's URL, its store and campaign, tokens, and the upstream."""

    def __init__(self, url: str, store, campaign_id: int, admin: str, tokens: dict[str, str], upstream) -> None:
        self.url, self.store, self.campaign_id = url, store, campaign_id
        self.admin, self.tokens, self.upstream = admin, tokens, upstream

    def headers(self, who: str) -> dict[str, str]:
        token = self.admin if who == "admin" else self.tokens[who]
        return {"Authorization": f"Bearer {token}"}


def arena_rig(guard: Guard, db, text: str | None = None, participants=("alice", "bob"), settings=None,
              delay: float = 0.0, slots: int = 8):
    """A context manager yielding an :class:`ArenaRig` (the campaign comes from the guard's constitution)."""
    import contextlib
    import secrets

    from ccguard import constitution as C
    from ccguard.arena.app import ArenaSettings, create_arena_app
    from ccguard.arena.campaign import from_constitution
    from ccguard.arena.grading import HeuristicGrader
    from ccguard.arena.runner import ProxyTarget
    from ccguard.arena.store import Store
    from ccguard.llm.base import create_backend
    from ccguard.server import ServerSettings, create_app
    from ccguard.server.loopback import FakeUpstream, serving

    @contextlib.contextmanager
    def rig():
        up = FakeUpstream(text or "", delay=delay, reply=None if text is not None else echo_success)
        store = Store(db)
        cid = store.ensure_campaign(from_constitution(C.load(guard.manifest.constitution["name"])))
        admin = store.invite("root", "admin").token
        tokens = {p: store.invite(p).token for p in participants}
        key = secrets.token_urlsafe(16)
        with serving(up.app) as up_url:
            proxy = create_app(guard, create_backend("openai", model="fake", base_url=f"{up_url}/v1"),
                               ServerSettings(api_keys=frozenset({key}), report_verdicts=True, slots=slots,
                                              max_waiting=64, slot_timeout=30))
            with serving(proxy) as proxy_url:
                app = create_arena_app(store, cid, ProxyTarget(f"{proxy_url}/v1", key, 256), HeuristicGrader(),
                                       settings or ArenaSettings())
                with serving(app) as url:
                    yield ArenaRig(url, store, cid, admin, tokens, up)
        store.close()

    return rig()

"""Runs one arena attempt: each run streams through the guarded proxy (the same path as ``ccguard serve``), is saved
as it streams, graded once the guard has let it through, and reported to the attempt's page as events."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource

from ccguard.arena.grading import Grader
from ccguard.arena.store import Store

log = logging.getLogger("ccguard.arena")
SAVE_EVERY = 0.25  # seconds between saves of a streaming response


def _retry_after(value: str | None) -> float:
    try:
        return min(5.0, max(0.1, float(value or 1)))
    except ValueError:
        return 1.0


@dataclass
class Hub:
    """The events of one attempt, kept while it runs (and a minute after) so any number of viewers can replay and
    follow them. Per-attempt state lives here, never on the app."""

    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    passed: set[int] = field(default_factory=set)  # runs graded a success: their text is not replayed to participants
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def emit(self, event: dict[str, Any]) -> None:
        async with self.cond:
            self.events.append(event)
            if event["type"] == "done":
                self.done = True
            if event["type"] == "grade" and event["passed"]:
                self.passed.add(event["run_id"])
            self.cond.notify_all()

    async def follow(self) -> Any:
        i = 0
        while True:
            async with self.cond:
                await self.cond.wait_for(lambda i=i: len(self.events) > i)
                batch = self.events[i:]
            for ev in batch:
                yield ev
                if ev["type"] == "done":
                    return
            i += len(batch)


@dataclass(frozen=True)
class RunPlan:
    run_id: int
    target: str
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class ProxyTarget:
    """The guarded proxy the arena attacks: its base URL (…/v1) and key."""

    url: str
    key: str | None
    max_tokens: int = 512
    timeout: float = 120.0


async def execute(store: Store, hub: Hub, client: httpx.AsyncClient, proxy: ProxyTarget, grader: Grader,
                  attempt_id: int, kind: str, runs: list[RunPlan], require: str, deadline: float) -> None:
    """Run every planned run in turn. Any failure marks the attempt failed (what was released stays saved), and the
    hub always gets its ``done`` event, so no viewer waits forever and the participant is never locked out."""
    successes, failed = 0, None
    try:
        async with asyncio.timeout(deadline):
            for plan in runs:
                ok = await _one(store, hub, client, proxy, grader, plan, require)
                successes += bool(ok)
    except TimeoutError:
        failed = f"the attempt ran past its {deadline:g} s limit"
    except asyncio.CancelledError:
        failed = "the server stopped during this attempt"
        await asyncio.shield(_end(store, hub, attempt_id, failed, False))
        raise
    except (httpx.HTTPError, RuntimeError) as e:
        failed = f"the guarded model failed: {e}"
    except Exception as e:  # noqa: BLE001 - a judge, a deleted row, a bug: the attempt fails, the server carries on
        log.error(json.dumps({"event": "attempt_error", "attempt": attempt_id, "error": type(e).__name__}))
        failed = f"the attempt failed ({type(e).__name__})"
    universal = kind == "template" and failed is None and successes == len(runs)
    log.info(json.dumps({"event": "attempt_done", "attempt": attempt_id, "runs": len(runs), "successes": successes,
                         "universal": universal, "failed": failed is not None}))
    await _end(store, hub, attempt_id, failed, universal)


async def _end(store: Store, hub: Hub, attempt_id: int, failed: str | None, universal: bool) -> None:
    try:
        await asyncio.to_thread(store.finish_attempt, attempt_id, "failed" if failed else "done", universal, failed)
    finally:
        await hub.emit({"type": "done", "attempt_id": attempt_id, "status": "failed" if failed else "done",
                        "error": failed, "universal": universal})


async def _one(store: Store, hub: Hub, client: httpx.AsyncClient, proxy: ProxyTarget, grader: Grader,
               plan: RunPlan, require: str) -> bool:
    await asyncio.to_thread(store.start_run, plan.run_id)
    await hub.emit({"type": "run", "run_id": plan.run_id, "target": plan.target})
    text, finish, report = "", None, None
    last_save = time.monotonic()
    headers = {"Authorization": f"Bearer {proxy.key}"} if proxy.key else {}
    body = {"model": "arena", "messages": plan.messages, "stream": True, "max_tokens": proxy.max_tokens}
    for attempt in range(60):  # the proxy sheds load with a 503 and Retry-After: wait and retry
        async with client.stream("POST", f"{proxy.url}/chat/completions", json=body, headers=headers,
                                 timeout=proxy.timeout) as r:
            if r.status_code == 503 and attempt < 59:
                await r.aread()
                await asyncio.sleep(_retry_after(r.headers.get("retry-after")))
                continue
            if r.status_code != 200:
                await r.aread()
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            async for sse in EventSource(r).aiter_sse():
                if sse.data == "[DONE]":
                    break
                chunk = json.loads(sse.data)
                if "error" in chunk:
                    raise RuntimeError(chunk["error"].get("message", "upstream error"))
                report = chunk.get("ccguard", report)
                choice = (chunk.get("choices") or [{}])[0]
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    text += piece
                    await hub.emit({"type": "delta", "run_id": plan.run_id, "text": piece})
                    if time.monotonic() - last_save > SAVE_EVERY:
                        await asyncio.to_thread(store.save_response, plan.run_id, text)
                        last_save = time.monotonic()
                finish = choice.get("finish_reason") or finish
        break
    blocked = finish == "content_filter"
    stage = (report or {}).get("stage") or ("output" if blocked else None)
    verdict = {"type": "verdict", "run_id": plan.run_id, "blocked": blocked, "stage": stage if blocked else None,
               "category": (report or {}).get("category") if blocked else None,
               "released_chars": (report or {}).get("released_chars", len(text))}
    await hub.emit(verdict)
    grade = None if blocked else await grader(plan.target, text, require)
    await asyncio.to_thread(
        store.finish_run, plan.run_id, response=text, blocked_stage=verdict["stage"], category=verdict["category"],
        released_chars=verdict["released_chars"], finish_reason=finish, status="done",
        grade_level=grade.level if grade else None, grade_passed=grade.passed if grade else None,
        grader=grade.grader if grade else None, grade_reason=grade.reason if grade else None)
    if grade is not None:
        await hub.emit({"type": "grade", "run_id": plan.run_id, "level": grade.level, "passed": grade.passed,
                        "grader": grade.grader})
    return bool(grade and grade.passed)

"""Resumable LLM jobs: every finished request is appended to a JSONL journal before the next is counted done.

A killed job re-run with the same tasks reads the journal, skips what is there, and runs only the rest; results come
back in task order, not completion order, so the records built from them are the same as an uninterrupted run's.
A torn last line (the process died mid-write) is cut off and that task runs again.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccguard.errors import CcguardError
from ccguard.llm.base import GenerateParams
from ccguard.llm.client import LLMClient
from ccguard.records import Message


@dataclass(frozen=True)
class Task:
    """One request. ``id`` must be stable across runs (derive it from content, not from a counter)."""

    id: str
    messages: list[Message]
    params: GenerateParams


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    raw = path.read_bytes()
    good = raw.rfind(b"\n") + 1
    if good < len(raw):
        # The last line was torn by a kill: drop it, the task runs again.
        with path.open("r+b") as f:
            f.truncate(good)
    for n, line in enumerate(raw[:good].decode("utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            done[row["task"]] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CcguardError("damaged job journal line; delete the file to start the job again", where=f"{path}:{n}") from None
    return done


async def run_tasks(
    client: LLMClient,
    tasks: Sequence[Task],
    journal: Path,
    *,
    concurrency: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every task not yet in ``journal``; return one result row per task, in task order.

    A row is ``{"task", "text", "finish_reason", "usage": {...}}``. A task that fails after the backend's retries
    is not journalled, so a re-run tries it again; the error is raised once the other tasks have finished.
    """
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("task ids must be unique")
    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    done = _read_journal(journal)
    todo = [t for t in tasks if t.id not in done]
    sem = asyncio.Semaphore(concurrency)
    write_lock = asyncio.Lock()
    errors: list[BaseException] = []
    finished = len(tasks) - len(todo)
    if progress:
        progress(finished, len(tasks))

    with journal.open("a", encoding="utf-8") as fh:

        async def one(task: Task) -> None:
            nonlocal finished
            async with sem:
                try:
                    out = await client.generate(task.messages, task.params)
                except Exception as e:  # noqa: BLE001 - recorded and re-raised after the others finish
                    errors.append(e)
                    return
            row = {"task": task.id, "text": out.text, "finish_reason": out.finish_reason, "model": out.model,
                   "usage": out.usage.model_dump()}
            async with write_lock:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                done[task.id] = row
                finished += 1
                if progress:
                    progress(finished, len(tasks))

        await asyncio.gather(*(one(t) for t in todo))
    if errors:
        raise errors[0]
    return [done[i] for i in ids]


def journal_usage(rows: Sequence[dict[str, Any]], price: Any = None) -> dict[str, Any]:
    """Tokens (and cost, given a :class:`~ccguard.llm.config.Price`) of a job's requests, from its result rows."""
    p = sum(int(r.get("usage", {}).get("prompt_tokens", 0)) for r in rows)
    c = sum(int(r.get("usage", {}).get("completion_tokens", 0)) for r in rows)
    out: dict[str, Any] = {"requests": len(rows), "prompt_tokens": p, "completion_tokens": c}
    if price is not None:
        out["cost_usd"] = round(price.cost(p, c), 6)
    return out

"""One thread for all classifier model work in the proxy, and the load signal that sheds requests.

On a CPU, model calls from many threads at once only fight over the same cores (each torch call already uses all
of them), so every model call (batched input checks, stream chunks, whole responses) goes through one worker, in
arrival order. How long the oldest waiting call has queued is the proxy's measure of overload: past
``max_queue_delay``, new requests are refused with a 503 before any work is done for them, so the streams already
admitted keep a bounded latency instead of everyone slowing down without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ModelWorker:
    """Runs model calls on one thread, first come first served, and reports how far behind it is."""

    def __init__(self, max_queue_delay: float) -> None:
        self.max_queue_delay = max_queue_delay
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ccguard-model")
        self._queued: deque[float] = deque()  # enqueue times of calls not yet started

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        t = time.monotonic()
        self._queued.append(t)

        def call() -> T:
            try:
                self._queued.remove(t)
            except ValueError:
                pass
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def queue_delay(self) -> float:
        """Seconds the oldest waiting call has waited (0 when none waits)."""
        try:
            return time.monotonic() - self._queued[0]
        except IndexError:
            return 0.0

    def overloaded(self) -> bool:
        return self.queue_delay() > self.max_queue_delay

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

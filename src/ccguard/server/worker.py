"""One thread for all classifier model work in the proxy, and the load signal that sheds requests.

On a CPU, model calls from many threads at once only fight over the same cores (each torch call already uses all
of them), so every model call (batched input checks, stream chunks, whole responses) goes through one worker, in
arrival order. How long the oldest waiting call has queued is the proxy's measure of overload: past
``max_queue_delay``, new requests are refused with a 503 before any work is done for them, so the streams already
admitted keep a bounded latency instead of everyone slowing down without limit.

That queue drains every round, though, while streams can still fall behind their upstream a little at each chunk
when the offered load exceeds what the cores can score. So the proxy also sheds on ``StreamLag``: how long the
latest piece of each admitted stream waited in the proxy, from its arrival from the upstream to its release.
"""

from __future__ import annotations

import asyncio
import statistics
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


class StreamLag:
    """How far admitted streams are behind their upstream. A stream's lag is how long its piece in hand has waited
    since it arrived from the upstream, or, between pieces, how long its last piece waited until release (for up to
    ``IDLE`` seconds: a stream whose upstream has gone quiet is not behind). Overloaded while the median over streams
    exceeds ``max_lag``. Time a stream spends blocked on a slow client is left out by the caller (see
    ``UpstreamPump.client_wait``)."""

    IDLE = 1.0

    def __init__(self, max_lag: float) -> None:
        self.max_lag = max_lag
        self._latest: dict[int, tuple[float, float]] = {}  # stream -> (seconds its last piece waited, released at)
        self._pending: dict[int, float] = {}  # stream -> arrival time of the piece it is working on

    def taken(self, stream: int, arrived: float) -> None:
        """A stream took a piece that arrived at ``arrived`` (``time.monotonic``) and is working on it."""
        self._pending[stream] = arrived

    def released(self, stream: int) -> float:
        """The stream released its piece in hand; returns how long the piece waited."""
        now = time.monotonic()
        arrived = self._pending.pop(stream, None)
        waited = 0.0 if arrived is None else now - arrived
        self._latest[stream] = (waited, now)
        return waited

    def end(self, stream: int) -> None:
        self._latest.pop(stream, None)
        self._pending.pop(stream, None)

    def lag(self) -> float:
        """The median over active streams of their lag, in seconds (0 when none streams)."""
        now = time.monotonic()
        lags = [now - t for t in self._pending.values()]
        lags += [w if now - t < max(self.IDLE, self.max_lag) else 0.0
                 for s, (w, t) in self._latest.items() if s not in self._pending]
        return statistics.median(lags) if lags else 0.0

    def overloaded(self) -> bool:
        return self.lag() > self.max_lag

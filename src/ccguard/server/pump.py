"""Reads an upstream stream as its pieces arrive, so that the proxy knows how long each one waited in it.

The stream loop takes pieces from a bounded queue. A background task fills it from the upstream and stamps each piece
with its arrival time, up to ``read_ahead`` pieces ahead (then it stops reading, and the upstream's own flow control
holds the rest). The time from arrival to release is the delay the proxy adds to that piece, whatever the
upstream's pace: the load signal ``StreamLag`` sheds on. Pieces that pile up while the classifiers are behind are
taken together (``more``), so a stream that falls behind is fed fewer, larger pieces and its chunks batch better.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

_END = object()


class UpstreamPump:
    """Upstream pieces with their arrival times. Create it inside the running event loop; always ``aclose`` it."""

    def __init__(self, agen: AsyncIterator[Any], read_ahead: int = 64) -> None:
        self._agen = agen
        self._queue: asyncio.Queue[tuple[float, Any, BaseException | None]] = asyncio.Queue(max(1, read_ahead))
        self._head: tuple[float, Any, BaseException | None] | None = None  # taken from the queue, not yet handed out
        # Seconds the stream loop has been blocked sending to its client (a slow reader); the stream loop adds them.
        # Arrival times are stamped without them, so a client that reads slowly does not count as proxy lag.
        self.client_wait = 0.0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        # This task runs the upstream generator, so this task closes it: on cancellation too (a client gone, a halt),
        # which stops the upstream request (a local model stops within a step).
        try:
            async for piece in self._agen:
                await self._queue.put((self._clock(), piece, None))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - raised again in the stream loop, where the proxy answers it
            await self._queue.put((self._clock(), None, e))
            return
        finally:
            aclose = getattr(self._agen, "aclose", None)
            if aclose is not None:
                await aclose()
        await self._queue.put((self._clock(), _END, None))

    def _clock(self) -> float:
        """The proxy's own time: ``time.monotonic`` less the time the stream loop spent blocked on its client."""
        return time.monotonic() - self.client_wait

    async def next(self, timeout: float) -> tuple[float, Any]:
        """The next piece and when it arrived (``time.monotonic``, moved later by any time since spent blocked on
        the client, so that now minus it is how long the proxy itself has held the piece). Raises
        ``StopAsyncIteration`` at the end, ``TimeoutError`` when none came within ``timeout`` seconds, and whatever
        the upstream raised."""
        if self._head is not None:
            (arrived, piece, error), self._head = self._head, None
        else:
            async with asyncio.timeout(timeout):
                arrived, piece, error = await self._queue.get()
        if error is not None:
            raise error
        if piece is _END:
            raise StopAsyncIteration
        return arrived + self.client_wait, piece

    def more(self, accept: Callable[[Any], bool]) -> list[Any]:
        """The pieces already here, in order, up to the first one ``accept`` refuses (or the end, or an error), which
        stays for ``next``. Never waits."""
        out: list[Any] = []
        while True:
            if self._head is None:
                try:
                    self._head = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    return out
            _, piece, error = self._head
            if error is not None or piece is _END or not accept(piece):
                return out
            out.append(piece)
            self._head = None

    async def aclose(self) -> None:
        """Stop reading and close the upstream stream (cancelling its request; a local model stops within a step).
        The reading task closes the stream itself, so that happens even if this call is cancelled while it waits."""
        self._task.cancel()
        await asyncio.wait({self._task})  # not gather: a cancelled gather would cancel the task's cleanup too
        if not self._task.cancelled():
            self._task.exception()  # retrieved (a failed close), so that asyncio does not log it as lost
        aclose = getattr(self._agen, "aclose", None)
        if aclose is not None:  # closes a stream whose task was cancelled before it ever ran; else a no-op
            await aclose()

"""The proxy's model worker: one thread, first come first served, and its overload signal."""

from __future__ import annotations

import asyncio
import threading

from ccguard.server.worker import ModelWorker


def test_queue_delay_grows_while_the_worker_is_busy_and_clears_after() -> None:
    async def main() -> None:
        w = ModelWorker(max_queue_delay=0.05)
        busy = threading.Event()
        first = asyncio.create_task(w.run(busy.wait, 5))
        await asyncio.sleep(0.02)
        order: list[int] = []
        queued = [asyncio.create_task(w.run(order.append, i)) for i in range(3)]
        await asyncio.sleep(0.1)
        assert w.queue_delay() >= 0.09 and w.overloaded()
        busy.set()
        assert await first is True
        await asyncio.gather(*queued)
        assert order == [0, 1, 2]  # arrival order
        assert w.queue_delay() == 0.0 and not w.overloaded()
        w.shutdown()

    asyncio.run(main())

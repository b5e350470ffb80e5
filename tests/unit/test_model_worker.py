"""The proxy's model worker: one thread, first come first served, and its overload signal."""

from __future__ import annotations

import asyncio
import threading
import time

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


def test_stream_lag_is_the_median_over_streams_of_the_piece_in_hand_or_the_last_one() -> None:
    from ccguard.server.worker import StreamLag

    lag = StreamLag(max_lag=0.05)
    assert lag.lag() == 0.0 and not lag.overloaded()
    now = time.monotonic()
    lag.taken(1, now - 1.0)  # a piece in hand for a second
    assert lag.overloaded()
    lag.taken(2, now)
    lag.released(2)
    lag.taken(3, now)
    lag.released(3)
    assert not lag.overloaded()  # one stream behind of three: its client may just read slowly
    assert lag.released(1) >= 1.0
    lag.end(1)
    lag.end(2)
    lag.end(3)
    assert lag.lag() == 0.0


def test_pump_hands_out_pieces_in_order_and_takes_waiting_text_together() -> None:
    from ccguard.llm.base import StreamEnd
    from ccguard.server.pump import UpstreamPump

    async def upstream():
        for p in ("a", "b", "c"):
            yield p
        yield StreamEnd("length")
        yield "d"
        raise RuntimeError("upstream broke")

    async def main() -> None:
        pump = UpstreamPump(upstream())
        await asyncio.sleep(0.05)  # everything has arrived
        t, first = await pump.next(1.0)
        assert first == "a" and t <= time.monotonic()
        assert pump.more(lambda p: type(p) is str) == ["b", "c"]  # stops before the StreamEnd
        _, end = await pump.next(1.0)
        assert isinstance(end, StreamEnd) and end.reason == "length"
        assert pump.more(lambda p: type(p) is str) == ["d"]  # stops before the error
        try:
            await pump.next(1.0)
        except RuntimeError as e:
            assert "broke" in str(e)
        else:
            raise AssertionError("the upstream's error was lost")
        await pump.aclose()

    asyncio.run(main())


def test_pump_times_out_and_closes_a_stalled_upstream() -> None:
    from ccguard.server.pump import UpstreamPump

    closed: list[bool] = []

    async def upstream():
        try:
            yield "a"
            await asyncio.sleep(60)
            yield "never"
        finally:
            closed.append(True)

    async def main() -> None:
        pump = UpstreamPump(upstream())
        assert (await pump.next(1.0))[1] == "a"
        try:
            await pump.next(0.1)
        except TimeoutError:
            pass
        else:
            raise AssertionError("no timeout")
        await pump.aclose()
        assert closed == [True]

    asyncio.run(main())


def test_pump_closes_the_upstream_even_when_its_closer_is_cancelled() -> None:
    from ccguard.server.pump import UpstreamPump

    closed: list[bool] = []

    async def upstream():
        try:
            for i in range(1000):
                yield str(i)
        finally:
            closed.append(True)  # a local model's stop flag, an HTTP response's close

    async def main() -> None:
        pump = UpstreamPump(upstream(), read_ahead=2)
        await asyncio.sleep(0.05)  # the queue is full: the generator waits at a yield
        closer = asyncio.create_task(pump.aclose())
        await asyncio.sleep(0)
        closer.cancel()  # as the server cancels a response whose client has gone, while it cleans up
        await asyncio.gather(closer, return_exceptions=True)
        for _ in range(20):
            await asyncio.sleep(0)
        assert closed == [True]

    asyncio.run(main())


def test_a_stream_whose_upstream_went_quiet_stops_counting_as_behind() -> None:
    from ccguard.server.worker import StreamLag

    lag = StreamLag(max_lag=0.05)
    lag.IDLE = 0.1
    lag.taken(1, time.monotonic() - 0.5)
    lag.released(1)
    assert lag.overloaded()  # its last piece waited half a second
    time.sleep(0.15)
    assert lag.lag() == 0.0 and not lag.overloaded()  # no piece since: the proxy is not behind on it

"""Everything the project relies on inside Faust, in one place; tests/unit/test_faust_internals.py
fails if a Faust upgrade changes any of it (faust-streaming's range is pinned in pyproject.toml).

1. The table-write context. A table write goes to the changelog partition of Faust's *current
   event* (a context variable, `faust.streams._current_event`). The heat worker writes a video's
   state after the event that changed it was handled, so it sets that event as current for the
   write: `table_writes_for(event)`.

2. A cheaper hand-off from the fetch loop to the streams. Faust's fetch loop hands every message to the streams with
`wait_first(deliver(message), suspend_flow.wait())`: the delivery races a rebalance, so that a
delivery blocked on a full stream buffer is abandoned when the partitions are about to move. That
race costs four tasks and one event-loop turn per message; on the 2-core reference machine it
halves what a Faust agent can consume (bench/heat measured 5.5k against 11.9k messages/s for an
agent that only counts). Nearly every delivery completes without waiting, so the consumer here
runs the delivery directly up to its first suspension, and only a delivery that has to wait goes
into Faust's race. Behaviour is otherwise Faust's own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine, Generator, Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import EventT
from mode.services import WaitResults


@contextmanager
def table_writes_for(event: EventT) -> Iterator[None]:
    """Table writes inside the block go to the changelog partition of `event`'s message."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class _Resumed:
    """Awaitable that carries on with a coroutine already run up to its first suspension."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any], suspended_on: Any) -> None:
        self._coroutine = coroutine
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, value = self._coroutine, self._suspended_on
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - cancellation and errors go to the coroutine
                try:
                    value = coroutine.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coroutine.send(sent)
                except StopIteration as stop:
                    return stop.value


def _is_wait_on(coroutine: object, event: asyncio.Event) -> bool:
    """Whether `coroutine` is a not yet started `event.wait()`."""
    frame = getattr(coroutine, "cr_frame", None)
    return asyncio.iscoroutine(coroutine) and frame is not None and frame.f_locals.get("self") is event


class DirectDeliveryConsumer(aiokafka_driver.Consumer):
    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if not (len(coros) == 2 and timeout is None and asyncio.iscoroutine(coros[0])
                and _is_wait_on(coros[1], self.suspend_flow)) or self.suspend_flow.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        delivery, flow_suspended = coros
        try:
            suspended_on = delivery.send(None)
        except StopIteration as done:
            flow_suspended.close()  # never started: nothing to cancel
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            flow_suspended.close()
            raise
        # The delivery has to wait (a full buffer, flow control): race it against a rebalance.
        return await super().wait_first(_Resumed(delivery, suspended_on), flow_suspended)


class Transport(aiokafka_driver.Transport):
    Consumer = DirectDeliveryConsumer

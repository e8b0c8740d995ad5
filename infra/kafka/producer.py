"""An asyncio face on confluent-kafka's producer: `await produce(...)` returns once the broker acked.

The producer is idempotent with acks=all, so a broker-side retry never duplicates or reorders a
message. librdkafka's delivery callbacks run on the event loop and resolve one future per request;
a message that the broker has not acknowledged within `message.timeout.ms` fails its future,
and the API answers 503 rather than a false acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from common.errors import BrokerUnavailable, LustraxError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


def producer_config(bootstrap: str, delivery_timeout_ms: int) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": delivery_timeout_ms,
        "request.timeout.ms": min(delivery_timeout_ms, 30000),
        "queue.buffering.max.messages": 200000,
        "socket.connection.setup.timeout.ms": 3000,
    }


def produce_acknowledged(bootstrap: str, messages: Sequence[OutgoingMessage], timeout_s: float = 15.0) -> None:
    """Blocking: produce and wait until the broker acknowledged every message (operator commands)."""
    producer = Producer(producer_config(bootstrap, int(timeout_s * 1000)), logger=log)
    errors: list[str] = []
    for message in messages:
        producer.produce(message.topic, message.value, message.key, headers=message.headers,
                         on_delivery=lambda err, _msg: errors.append(err.str()) if err else None)
    if producer.flush(timeout_s + 5) or errors:
        raise LustraxError(f"the broker did not acknowledge {len(messages)} message(s): {errors or 'timeout'}")


class _Acknowledgements:
    """The delivery reports of one request's messages, settled as one future."""

    def __init__(self, future: asyncio.Future[None], expected: int) -> None:
        self.future = future
        self._remaining = expected
        self._error: KafkaError | None = None

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and self._error is None:
            self._error = err
        self._remaining -= 1
        if self._remaining == 0 and not self.future.done():
            if self._error is None:
                self.future.set_result(None)
            else:
                self.future.set_exception(BrokerUnavailable(f"the broker did not acknowledge: {self._error.str()}"))


class AsyncProducer:
    """Delivery reports are served from the event loop itself (no poll thread, no locks): while
    messages are in flight, `poll(0)` runs every `POLL_INTERVAL_S`; when idle, every second, so
    that librdkafka's errors are still logged."""

    POLL_INTERVAL_S = 0.0005
    IDLE_POLL_INTERVAL_S = 1.0

    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config, logger=log)
        self._loop = asyncio.get_running_loop()
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(self.IDLE_POLL_INTERVAL_S, self._poll)

    def _poll(self) -> None:
        self._producer.poll(0)
        self._in_flight = len(self._producer)
        self._timer = self._loop.call_later(
            self.POLL_INTERVAL_S if self._in_flight else self.IDLE_POLL_INTERVAL_S, self._poll)

    def _poll_soon(self) -> None:
        if self._in_flight == 0 and self._timer is not None:
            self._timer.cancel()
            self._timer = self._loop.call_later(self.POLL_INTERVAL_S, self._poll)
        self._in_flight = len(self._producer)

    async def produce_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Produce every message and wait for all acknowledgements; BrokerUnavailable if any fails."""
        if not messages:
            return
        acks = _Acknowledgements(self._loop.create_future(), len(messages))
        for message in messages:
            try:
                self._producer.produce(message.topic, message.value, message.key, on_delivery=acks.on_delivery)
            except BufferError:
                raise BrokerUnavailable("the producer queue is full", retry_after_s=1) from None
            except KafkaException as exc:
                raise BrokerUnavailable(f"cannot produce: {exc.args[0].str()}") from None
            finally:
                self._poll_soon()
        await acks.future

    def broker_reachable(self, timeout_s: float = 2.0) -> bool:
        """A metadata round trip (blocking: call it from a thread)."""
        try:
            return bool(self._producer.list_topics(timeout=timeout_s).brokers)
        except KafkaException:
            return False

    def close(self, timeout_s: float = 10.0) -> int:
        """Stop polling and flush what is in flight; returns messages left undelivered."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self._producer.flush(timeout_s)

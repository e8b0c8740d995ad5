"""An asyncio face on confluent-kafka's producer: `await produce(...)` returns once the broker acked.

The producer is idempotent with acks=all, so a broker-side retry never duplicates or reorders a
message. librdkafka's delivery callbacks run on a poll thread and resolve asyncio futures on the
loop; a message that the broker has not acknowledged within `message.timeout.ms` fails its future,
and the API answers 503 rather than a false acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers.errors import BrokerUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    key: bytes
    value: bytes


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


class AsyncProducer:
    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config, logger=log)
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.05)

    async def produce_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Produce every message and wait for all acknowledgements; BrokerUnavailable if any fails."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []

        def settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
            if future.done():
                return
            if err is None:
                future.set_result(None)
            else:
                future.set_exception(BrokerUnavailable(f"the broker did not acknowledge: {err.str()}"))

        for message in messages:
            future: asyncio.Future[None] = loop.create_future()

            def on_delivery(err: KafkaError | None, _msg: Message, future: asyncio.Future[None] = future) -> None:
                loop.call_soon_threadsafe(settle, future, err)

            try:
                self._producer.produce(message.topic, message.value, message.key, on_delivery=on_delivery)
            except BufferError:
                raise BrokerUnavailable("the producer queue is full", retry_after_s=1) from None
            except KafkaException as exc:
                raise BrokerUnavailable(f"cannot produce: {exc.args[0].str()}") from None
            futures.append(future)
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def broker_reachable(self, timeout_s: float = 2.0) -> bool:
        """A metadata round trip (blocking: call it from a thread)."""
        try:
            return bool(self._producer.list_topics(timeout=timeout_s).brokers)
        except KafkaException:
            return False

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is in flight, then stop the poll thread; returns messages left undelivered."""
        remaining = self._producer.flush(timeout_s)
        self._closing.set()
        self._poller.join(timeout=2)
        return remaining

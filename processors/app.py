"""The common shape of the project's Faust apps: broker, loopback web with /healthz, raw topics.

Values on our topics are Avro single-object bytes: agents take them raw and decode with our codec,
so that a message that cannot be decoded goes to the dead-letter topic instead of crashing Faust.
Delivery is at least once: an agent awaits the broker's acknowledgement of what it produces before
it moves on (and so before its input offset is committed); effects are idempotent by event_id and
deterministic keys.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.types import EventT
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common.settings import Settings
from processors.faust_internals import RestartStickyAssignor, Transport, produce
from schemas.codec import decode, encode
from schemas.dead_letters import DeadLetter
from schemas.errors import SchemaError
from schemas.topics import DEAD_LETTER_TOPIC, TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
SESSION_TIMEOUT_S = 10.0  # a member gone this long leaves its group (see faust_app)


def faust_app(name: str, settings: Settings, web_port: int, *, instance: str | None = None,
              **config: Any) -> faust.App:
    """`instance` gives each of several workers of one app its own data directory (RocksDB)."""
    datadir = settings.data_dir / "faust" / name
    if instance is not None:
        datadir = datadir / instance
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"lustrax-{name}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        datadir=str(datadir),
        web_enabled=True,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=web_port,
        topic_disable_leader=True,  # no assignor leader topic: every worker is equal here
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Static membership: a worker restarted after a crash (same host and web port: what the
        # supervisor does) rejoins at once with its partitions, without a rebalance of the others.
        # The port is part of the name: Faust's assignor rejects an assignment made for another URL,
        # which is what a static rejoin hands back. A member that does not come back (static
        # members do not leave the group, even on a clean stop) holds its partitions, and a new
        # member's join, until its session times out: 10 s rather than Faust's 60, with a
        # heartbeat every 3 s (aiokafka's own thread sends them, so a busy event loop does not
        # miss one). docs/operations.md has the measured costs.
        consumer_group_instance_id=f"lustrax-{name}-{socket.gethostname()}-{web_port}",
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=3.0,
        # Each worker claims its partitions of before a restart again (processors/faust_internals.py 4.).
        PartitionAssignor=RestartStickyAssignor,
        **config,
    )
    app.transport = Transport(app.conf.broker_consumer, app)  # before any topic: they bind to it

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        # Alive from the start; `ready` once it has its partitions and their tables' state, and is
        # not rebalancing or recovering again (only then does it take events).
        ready = app.tables.recovery.completed.is_set() and not (app.rebalancing or app.in_recovery)
        return web.json({"status": "ok", "app": app.conf.id, "ready": ready})

    return app


def expose_metrics(app: faust.App, registry: CollectorRegistry) -> None:
    """Serve `registry` in the Prometheus text format at /metrics on the app's loopback web port."""

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


async def start_sending(app: faust.App, schema: str, records: list[dict[str, Any]], *,
                        validate: bool = True) -> list[asyncio.Future[Any]]:
    """Encode `records` as `schema` and hand them to the app's producer, keyed by video id, to the
    schema's topic; the broker's acknowledgements, to await before the input is acked.
    `validate=False` skips the schema's validation, for records built field by field from numbers
    the caller already checked (the heat worker's: tests/unit/test_heat_worker_parts.py)."""
    return await produce(app, TOPIC_BY_SCHEMA[schema].name, [
        (record["video_id"].encode(), encode(schema, record, validate_record=validate)) for record in records])


async def send_events(app: faust.App, schema: str, records: list[dict[str, Any]]) -> None:
    """Produce all, then wait until the broker has each (one round trip for many, not one each)."""
    deliveries = await start_sending(app, schema, records)
    if deliveries:
        await asyncio.gather(*deliveries)


async def send_event(app: faust.App, schema: str, record: dict[str, Any]) -> None:
    await send_events(app, schema, [record])


async def dead_letter(app: faust.App, message: Any, consumer: str, reason: str) -> None:
    """Park a message we cannot process on the dead-letter topic (schemas/dead_letters.py), wait for
    the broker's acknowledgement (the caller acks the message after), and go on."""
    log.warning("dead-lettering %s[%s]@%s: %s", message.topic, message.partition, message.offset, reason)
    parked = DeadLetter(consumer, reason, message.topic, message.partition, message.offset,
                        message.key if isinstance(message.key, bytes) else b"", message.value or b"")
    [delivery] = await produce(app, DEAD_LETTER_TOPIC.name, [(parked.key, parked.value)], headers=parked.headers())
    await delivery


async def handle_each(app: faust.App, stream: faust.StreamT, schema: str, consumer: str,
                      handle: Callable[[dict[str, Any]], Awaitable[None]],
                      parked: tuple[type[Exception], ...] = ()) -> None:
    """Decode each message of `stream` as `schema` and await `handle(record)`; a message that does not
    decode, or whose handling raises, is parked (the exceptions in `parked` with their message as
    the reason, any other as unexpected) and the stream goes on."""

    async def handle_record(_: str, record: dict[str, Any], __: EventT) -> None:
        await handle(record)

    await handle_events(app, stream, (schema,), consumer, handle_record, parked)


async def handle_events(app: faust.App, stream: faust.StreamT, schemas: tuple[str, ...], consumer: str,
                        handle: Callable[[str, dict[str, Any], EventT], Awaitable[None]],
                        parked: tuple[type[Exception], ...] = (),
                        on_parked: Callable[[EventT], None] | None = None, logical_types: bool = True) -> None:
    """`handle_each` for a stream of several schemas: `handle(schema, record, event)`. One schema
    is resolved to its current version; several are taken as written. `on_parked(event)` is told
    of each message parked (a manual-ack stream acks it in its turn). `logical_types=False`:
    timestamps as epoch milliseconds, UUIDs as strings (schemas/codec.py `decode`)."""
    async for message_event in stream.events():
        message = message_event.message
        try:
            if len(schemas) == 1:
                schema, record = decode(message.value, schemas[0], logical_types=logical_types)
            else:
                schema, record = decode(message.value, logical_types=logical_types)
                if schema not in schemas:
                    raise SchemaError(f"{schema}, not one of {', '.join(schemas)}")
        except SchemaError as exc:
            await dead_letter(app, message, consumer, f"undecodable {' or '.join(schemas)}: {exc}")
        else:
            try:
                await handle(schema, record, message_event)
                continue
            except parked as exc:
                await dead_letter(app, message, consumer, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream; park the message
                log.exception("unexpected error on %s", record.get("video_id"))
                await dead_letter(app, message, consumer, f"unexpected {type(exc).__name__}: {exc}")
        if on_parked is not None:
            on_parked(message_event)

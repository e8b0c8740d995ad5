"""The consumer's direct hand-off: what it does when a delivery completes, waits, fails or races a
rebalance (processors/faust_internals.py). No broker: the consumer is built but never started."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import pytest
from faust.types import TP

from processors.faust_internals import DirectDeliveryConsumer, Transport


def run_with_consumer(main: Callable[[DirectDeliveryConsumer], Awaitable[Any]]) -> Any:
    """Run `main` on a new loop with a consumer made on that loop (as in a worker)."""
    async def bound() -> Any:
        app = faust.App("transport-test", broker="kafka://127.0.0.1:1", web_enabled=False)
        app.transport = Transport(app.conf.broker_consumer, app)
        assert isinstance(app.consumer, DirectDeliveryConsumer)
        return await main(app.consumer)
    return asyncio.run(bound())


def test_a_delivery_that_does_not_wait_runs_inline() -> None:
    delivered: list[str] = []

    async def deliver() -> str:
        delivered.append("m")
        return "ok"

    async def main(consumer: DirectDeliveryConsumer) -> None:
        tasks_before = len(asyncio.all_tasks())
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an un-awaited coroutine would warn
            results = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        assert results.results == ["ok"] and not results.stopped
        assert len(asyncio.all_tasks()) == tasks_before  # no task was made for it

    run_with_consumer(main)
    assert delivered == ["m"]


def test_a_delivery_that_waits_completes_with_its_result() -> None:
    async def main(consumer: DirectDeliveryConsumer) -> None:
        gate = asyncio.Event()

        async def deliver() -> str:
            await gate.wait()  # a full stream buffer
            return "late"

        asyncio.get_running_loop().call_later(0.05, gate.set)
        results = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        assert results.results == ["late"] and not results.stopped

    run_with_consumer(main)


def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    cancelled: list[bool] = []

    async def main(consumer: DirectDeliveryConsumer) -> None:
        async def deliver() -> None:
            try:
                await asyncio.Event().wait()  # never has room
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)  # a rebalance starts
        flow_suspended = consumer.suspend_flow.wait()
        results = await asyncio.wait_for(consumer.wait_first(deliver(), flow_suspended), 5)
        assert results.done == [flow_suspended]
        await asyncio.sleep(0)

    run_with_consumer(main)
    assert cancelled == [True]


def test_a_failing_delivery_raises() -> None:
    async def deliver() -> None:
        raise ValueError("undecodable")

    async def main(consumer: DirectDeliveryConsumer) -> None:
        await consumer.wait_first(deliver(), consumer.suspend_flow.wait())

    with pytest.raises(ValueError, match="undecodable"):
        run_with_consumer(main)


def test_with_the_flow_already_suspended_nothing_is_delivered() -> None:
    delivered: list[str] = []

    async def deliver() -> None:
        await asyncio.sleep(0.2)
        delivered.append("m")

    async def main(consumer: DirectDeliveryConsumer) -> None:
        consumer.suspend_flow.set()
        flow_suspended = consumer.suspend_flow.wait()
        results = await consumer.wait_first(deliver(), flow_suspended)
        assert results.done == [flow_suspended]
        await asyncio.sleep(0.3)

    run_with_consumer(main)
    assert delivered == []


def _consumer_with_a_table() -> tuple[faust.App, DirectDeliveryConsumer]:
    app = faust.App("hold-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.Table("state", partitions=2)
    app.transport = Transport(app.conf.broker_consumer, app)
    app.consumer._active_partitions = set()
    return app, app.consumer


STREAM, CHANGELOG = TP("views", 0), TP("hold-test-state-changelog", 0)


def test_stream_partitions_resumed_while_rebalancing_wait_for_the_flow() -> None:
    async def main() -> None:
        app, consumer = _consumer_with_a_table()
        assert consumer._is_changelog_tp(CHANGELOG) and not consumer._is_changelog_tp(STREAM)
        app.on_rebalance_start()
        consumer.stop_flow()
        consumer.pause_partitions({STREAM, CHANGELOG})
        # Recovery reads the changelog at once; the stream partition is resumed before the seek to
        # the committed offsets, when what the streams are handed is about to be cleared.
        consumer.resume_partitions({STREAM, CHANGELOG})
        assert consumer._active_partitions == {CHANGELOG}
        app.flow_control.resume()  # clears the streams' queues
        consumer.resume_flow()
        assert consumer._active_partitions == {STREAM, CHANGELOG}

    asyncio.run(main())


def test_a_new_rebalance_forgets_partitions_held_for_the_flow() -> None:
    async def main() -> None:
        app, consumer = _consumer_with_a_table()
        app.on_rebalance_start()
        consumer.resume_partitions({STREAM})
        consumer.pause_partitions({STREAM})  # revoked before the flow resumed
        consumer.resume_flow()
        assert consumer._active_partitions == set()

    asyncio.run(main())


def test_out_of_a_rebalance_partitions_resume_at_once() -> None:
    async def main() -> None:
        app, consumer = _consumer_with_a_table()
        app.rebalancing = False
        consumer.resume_partitions({STREAM})
        assert consumer._active_partitions == {STREAM}

    asyncio.run(main())


def test_the_fetch_follows_the_active_partitions_and_an_empty_set_is_not_every_partition() -> None:
    async def main() -> None:
        _, consumer = _consumer_with_a_table()
        asked: list[Any] = []

        async def getmany(active: Any, timeout: float) -> dict[TP, list[Any]]:
            asked.append(active)
            return {}

        consumer._thread.getmany = getmany  # type: ignore[method-assign]
        active = {STREAM}
        await consumer._getmany(active, 0.1)
        [view] = asked
        assert STREAM in view and view
        active.clear()  # every partition paused (held) while the fetcher thread waits for records
        # aiokafka drains `tp` unless `partitions and tp not in partitions`: nothing now.
        assert STREAM not in view and bool(view)

    asyncio.run(main())


def test_the_seek_after_an_assignment_also_rewinds_partitions_without_a_committed_offset() -> None:
    async def main() -> None:
        _, consumer = _consumer_with_a_table()
        committed, fresh = TP("views", 1), TP("views", 2)
        rewound: list[Any] = []

        async def seek_to_committed() -> dict[TP, int | None]:
            return {committed: 7, fresh: None, CHANGELOG: None}

        async def seek_to_beginning(*tps: Any) -> None:
            rewound.extend(tps)

        consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
        consumer.assignment = lambda: {committed, fresh, CHANGELOG}  # type: ignore[method-assign]
        consumer._thread.seek_to_beginning = seek_to_beginning  # type: ignore[method-assign]
        await consumer.perform_seek()
        assert [(tp.topic, tp.partition) for tp in rewound] == [("views", 2)]
        assert consumer._read_offset[committed] == 7 and consumer._read_offset[fresh] is None

    asyncio.run(main())


# -- canaries: what an upgrade of Faust must keep for processors/faust_internals.py to hold -------

def test_the_table_internals_write_table_uses_are_still_there() -> None:
    import inspect

    import aiokafka
    from faust.stores.rocksdb import Store
    from faust.tables.base import Collection

    assert {"create_batch", "send_batch"} <= set(dir(aiokafka.AIOKafkaProducer))
    assert "timestamp" in inspect.signature(aiokafka.producer.message_accumulator.BatchBuilder.append).parameters
    assert {"_db_for_partition", "_get", "set_persisted_offset", "persisted_offset"} <= set(dir(Store))
    assert "changelog_topic" in dir(Collection)
    from faust.transport.drivers.aiokafka import Producer
    assert "_ensure_producer" in dir(Producer)
    # Recovery copies changelog records into the store byte for byte: what write_table writes is
    # what a restarted worker reads.
    assert "msg.key, msg.value" in inspect.getsource(Store.apply_changelog_batch)


def test_read_table_gives_back_the_bytes_a_batch_wrote(tmp_path: Any) -> None:
    import rocksdict

    from processors.faust_internals import read_table

    app = faust.App("internals-test", broker="kafka://127.0.0.1:1", web_enabled=False, store="rocksdb://",
                    datadir=str(tmp_path))
    table = app.Table("state", partitions=6, schema=faust.Schema(key_type=bytes, value_type=bytes,
                                                                 key_serializer="raw", value_serializer="raw"))
    rows = rocksdict.WriteBatch(raw_mode=True)  # as write_table writes
    rows.put(b"k", b'{"a": [1]}')
    table.data._db_for_partition(3).write(rows)
    assert read_table(table, b"k") == b'{"a": [1]}'
    assert read_table(table, b"missing") is None


def test_faust_still_hands_messages_over_with_the_race_the_shortcut_recognises() -> None:
    import inspect

    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer)
    # DirectDeliveryConsumer.wait_first takes this exact call apart; another shape falls back to
    # Faust's own race (correct, but the speed of bench/heat is lost), so an upgrade must be looked at.
    assert "self.wait_first(\n                                callback(message), self.suspend_flow.wait()" in source


def test_recovery_still_resumes_stream_partitions_before_the_seek_and_clears_queues_after() -> None:
    """What 3. of processors/faust_internals.py is for: if an upgrade changes this order, or stops
    clearing the streams' queues on resume, the hold-back is to be looked at again."""
    import inspect

    from faust.channels import Channel
    from faust.tables.recovery import Recovery
    from mode.utils.queues import FlowControlEvent

    source = inspect.getsource(Recovery._resume_streams)
    resume, seek, flow = (source.index(s) for s in ("consumer.resume_partitions(", "consumer.perform_seek()",
                                                    "app.flow_control.resume()"))
    assert resume < seek < flow and source.index("consumer.resume_flow()") > flow
    assert "self.clear()" in inspect.getsource(FlowControlEvent.resume)
    assert "clear_on_resume=True" in inspect.getsource(Channel.queue.fget)

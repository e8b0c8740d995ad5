"""The sink's offset commit after an insert: retried while the group coordinator is unavailable
(as after a broker restart), given up otherwise (the batch is read again and deduplicated)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processors.sink import sink as sink_module
from processors.sink.sink import ClickHouseSink


class Commits:
    def __init__(self, *failures: int) -> None:
        self.failures = list(failures)
        self.calls = 0

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.calls += 1
        assert asynchronous is False
        if self.failures:
            raise KafkaException(KafkaError(self.failures.pop(0)))


def _sink(consumer: Commits) -> ClickHouseSink:
    sink = ClickHouseSink.__new__(ClickHouseSink)  # no broker: only the commit is under test
    sink.consumer = consumer  # type: ignore[assignment]
    sink.stopping = threading.Event()
    return sink


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(sink_module.time, "sleep", slept.append)
    return slept


def test_a_coordinator_loading_after_a_broker_restart_is_waited_for(no_sleep: list[float]) -> None:
    consumer = Commits(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR)
    _sink(consumer)._commit([TopicPartition("t", 0, 5)])
    assert consumer.calls == 3 and no_sleep == [0.2, 0.4]


def test_a_commit_refused_for_good_is_left_to_the_next_reader() -> None:
    consumer = Commits(KafkaError.UNKNOWN_MEMBER_ID)
    _sink(consumer)._commit([TopicPartition("t", 0, 5)])
    assert consumer.calls == 1


def test_a_stopping_sink_does_not_wait(no_sleep: list[Any]) -> None:
    consumer = Commits(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    sink = _sink(consumer)
    sink.stopping.set()
    sink._commit([TopicPartition("t", 0, 5)])
    assert consumer.calls == 1 and no_sleep == []


@pytest.mark.parametrize("error", [KafkaError(KafkaError.FENCED_INSTANCE_ID),  # as a commit reports it
                                   KafkaError(KafkaError._FATAL, fatal=True)])
def test_a_fenced_consumer_ends_the_sink(error: KafkaError) -> None:
    consumer = Commits()

    def commit(offsets: list[TopicPartition], asynchronous: bool) -> None:
        consumer.calls += 1
        raise KafkaException(error)

    consumer.commit = commit  # type: ignore[method-assign]
    with pytest.raises(KafkaException):
        _sink(consumer)._commit([TopicPartition("t", 0, 5)])
    assert consumer.calls == 1

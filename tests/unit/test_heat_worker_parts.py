"""The heat worker's parts around the processor, without a broker: its metrics, the records it
builds without the schema's validation, and Faust's compiled fast paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
import uvloop
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from processors.faust_internals import faust_speedups, table_keys, table_partitions
from processors.heat_score.agent import LAG_BUCKETS_S, heat_record, like_update_record
from processors.heat_score.metrics import HeatMetrics
from processors.heat_score.processor import LikeUpdateDue, ScoreDue
from processors.heat_score.score import WindowStats
from schemas.codec import decode, encode
from schemas.envelope import new_record


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode()) for s in family.samples}


def test_metrics_read_as_prometheus_client_would_count_them() -> None:
    counts = HeatMetrics(LAG_BUCKETS_S)
    ours = CollectorRegistry()
    ours.register(counts)
    theirs = CollectorRegistry()
    reference = Histogram("lustrax_heat_event_lag_seconds", "lag", buckets=LAG_BUCKETS_S, registry=theirs)
    for lag in (0.0, 0.05, 0.051, 1.0, 2.5, 299.0, 300.0, 301.0, 1e6):
        counts.lag(lag)
        reference.observe(lag)
    for changed in (True, True, False):
        counts.event(changed)
    counts.parked()
    got, want = samples(ours), samples(theirs)
    lag_samples = {key: value for key, value in got.items() if key[0].startswith("lustrax_heat_event_lag_seconds")}
    assert lag_samples == {key: value for key, value in want.items() if not key[0].endswith("_created")}
    assert got[("lustrax_heat_events_total", (("outcome", "applied"),))] == 2
    assert got[("lustrax_heat_events_total", (("outcome", "duplicate_or_late"),))] == 1
    assert got[("lustrax_heat_events_total", (("outcome", "dead_letter"),))] == 1


def test_records_sent_without_validation_pass_it() -> None:
    stats = WindowStats(views=3, unique_viewers=2, sessions=3, net_likes=-1, completion_rate=1 / 3,
                        avg_watched_fraction=0.5, rewatch_rate=0.5)
    for schema, record in (("HeatScoreUpdated", heat_record(ScoreDue("v", "1h", 1_767_225_600_123, 1.5, stats))),
                           ("LikeUpdate", like_update_record(LikeUpdateDue("v", 7, -1)))):
        fast = encode(schema, record, validate_record=False)
        assert fast == encode(schema, record)  # validation passes and changes nothing
        assert decode(fast)[0] == schema


def test_fausts_cython_paths_and_uvloop_load() -> None:
    async def report() -> dict[str, str]:
        return faust_speedups()

    assert asyncio.run(report())["event loop"].startswith("asyncio.")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        speedups = runner.run(report())
    assert speedups == {"event loop": "uvloop.Loop", "Cython stream iterator": "loaded", "Cython conductor": "loaded"}


def test_table_keys_pages_through_a_partitions_rocksdb_store(tmp_path: Path) -> None:
    app = faust.App("keys-test", broker="kafka://127.0.0.1:1", web_enabled=False, datadir=str(tmp_path),
                    store="rocksdb://")
    table = app.Table("t", partitions=2)
    db = table.data._db_for_partition(1)
    for n in range(25):
        db[f'"k{n:02}"'.encode()] = b"1"
    assert table_partitions(table) == [1]
    pages, after = [], None
    while page := table_keys(table, 1, after, 10):
        pages.append(page)
        after = page[-1]
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [key for page in pages for key in page] == [f'"k{n:02}"'.encode() for n in range(25)]
    assert table_keys(table, 0, None, 10) == []  # not open here: not this worker's


def test_decoding_without_logical_types_gives_the_plain_values() -> None:
    record = new_record("WatchTick", "test", {"video_id": "v", "user_id": "u", "session_id": "s",
                                              "position_ms": 5, "duration_ms": 10})
    data = encode("WatchTick", record)
    for reader in (None, "WatchTick"):
        schema, plain = decode(data, reader, logical_types=False)
        assert schema == "WatchTick"
        assert plain == {**decode(data)[1], "occurred_at": int(record["occurred_at"].timestamp() * 1000),
                         "event_id": str(record["event_id"])}

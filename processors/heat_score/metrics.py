"""The heat worker's Prometheus metrics as plain counts, turned into metric families only when scraped.

prometheus_client's Counter.inc and Histogram.observe take a lock and walk label and bucket
objects: at one of each per event they were a tenth of the worker's per-event time. Here an event
costs an integer increment and a bisect; `collect()` (a prometheus_client collector) builds the
same families, `lustrax_heat_events_total{outcome}` and `lustrax_heat_event_lag_seconds`, on a
scrape. The worker is one thread (its event loop), so no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

OUTCOMES: Final = ("applied", "duplicate_or_late", "dead_letter")


class HeatMetrics:
    def __init__(self, lag_buckets_s: Sequence[float]) -> None:
        self._bounds = sorted(lag_buckets_s)
        self._lag_counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._lag_sum = 0.0
        self.applied = self.duplicate_or_late = self.dead_letter = 0

    def event(self, changed: bool) -> None:
        if changed:
            self.applied += 1
        else:
            self.duplicate_or_late += 1

    def parked(self) -> None:
        self.dead_letter += 1

    def lag(self, seconds: float) -> None:
        """Kafka record timestamp to applied in the state; a bucket's bound is inclusive (le)."""
        self._lag_counts[bisect_left(self._bounds, seconds)] += 1
        self._lag_sum += seconds

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("lustrax_heat_events", "Engagement events taken by the heat worker, by outcome",
                                     labels=["outcome"])
        for outcome in OUTCOMES:
            events.add_metric([outcome], getattr(self, outcome))
        yield events
        cumulative, buckets = 0, []
        for bound, count in zip([*self._bounds, float("inf")], self._lag_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        yield HistogramMetricFamily("lustrax_heat_event_lag_seconds", "Kafka record timestamp to applied in the heat state",
                                    buckets=buckets, sum_value=self._lag_sum)

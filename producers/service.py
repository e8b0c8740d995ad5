"""The ingest service: what every request of the ingest API shares, one per process (producers/app.py builds it)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CollectorRegistry, Counter as MetricCounter, Gauge, Histogram

from catalog.cases import CaseBook, is_overdue
from catalog.cursor import CursorCodec
from catalog.feed import TRUST_TOPICS, CatalogFeed
from catalog.projection import CatalogProjection
from common.errors import ApiError
from common.settings import Settings
from common.tokens import Principal, TokenVerifier, authorize_user
from infra.kafka.producer import AsyncProducer, OutgoingMessage
from producers.events import LikeEvent, check_event_time, to_avro
from producers.limits import RecentIds, TokenBucketLimiter
from producers.uploads import UploadService
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA

# A human's review decision (video_id, approve, reviewer_id, reason) -> the events to send; blocking.
# The composition root (lustrax/review.py) builds it from processors/moderation: producers/ may not
# import processors/ (docs/catalog.md).
HumanReviewer = Callable[[str, bool, str, str | None], list[tuple[str, dict[str, Any]]]]


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = MetricCounter("lustrax_ingest_events_accepted", "Events acknowledged by the broker",
                                      ["type"], registry=self.registry)
        self.rejected = MetricCounter("lustrax_ingest_requests_rejected", "Requests refused, by event type and reason",
                                      ["type", "reason"], registry=self.registry)
        self.produce_latency = Histogram(
            "lustrax_ingest_produce_latency_seconds", "From produce to broker acknowledgement of a request's events",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)


class IngestService:
    """Everything a request needs; one per process (the composition root of the API)."""

    def __init__(self, settings: Settings, producer: AsyncProducer, uploads: UploadService,
                 reviewer: HumanReviewer | None = None) -> None:
        self.settings = settings
        self.producer = producer
        self.uploads = uploads
        self.reviewer = reviewer
        # The catalog read model (docs/catalog.md): this replica's own copy, rebuilt from the topics.
        self.catalog = CatalogProjection()
        self.catalog_feed = CatalogFeed(settings.kafka_bootstrap, self.catalog)
        # The trust-and-safety case book (catalog/cases.py): notices, complaints, terminated accounts.
        self.cases = CaseBook()
        self.cases_feed = CatalogFeed(settings.kafka_bootstrap, self.cases, TRUST_TOPICS, name="cases")
        self.report_limiter = TokenBucketLimiter(settings.trust_report_burst, settings.trust_report_rate_per_min / 60)
        self.cursors = CursorCodec(settings.jwt_signing_secret)
        self.metrics = IngestMetrics()
        Gauge("lustrax_complaints_overdue", "Open complaints past their resolution deadline",
              registry=self.metrics.registry).set_function(
            lambda: sum(is_overdue(case, self.trust_now()) for case in self.cases.complaints()))
        self.like_limiter = TokenBucketLimiter(settings.ingest_like_burst, settings.ingest_like_rate_per_min / 60)
        self.recent = RecentIds()
        self.tokens = TokenVerifier(settings.jwt_signing_secret, max_ttl_s=settings.jwt_max_ttl_s)
        self.age_verifier = settings.age_verifier

    def start(self) -> None:
        self.catalog_feed.start()
        self.cases_feed.start()

    def close(self, own_producer: bool) -> None:
        self.catalog_feed.stop()
        self.cases_feed.stop()
        if own_producer:
            self.producer.close()

    async def accept(self, principal: Principal, events: list[Any], prefix: str | None) -> list[str]:
        """Authorize, rate-limit, encode and produce; returns event ids once all are acknowledged."""
        now = datetime.now(UTC)
        for index, event in enumerate(events):
            where = f"{prefix}[{index}]." if prefix else ""
            check_event_time(event, now, f"{where}occurred_at")
            authorize_user(principal, event.user_id, f"{where}user_id")
        likes = Counter(e.user_id for e in events if isinstance(e, LikeEvent))
        if likes:
            user, count = likes.most_common(1)[0]
            if count > self.like_limiter.capacity:
                # No wait would ever let this through: refuse it for good instead of a 429.
                raise ApiError(422, "too_many_likes",
                               f"a request may hold at most {self.settings.ingest_like_burst} likes and unlikes of "
                               f"one user (LUSTRAX_INGEST_LIKE_BURST); {user} has {count}", prefix or "type")
            wait_s = self.like_limiter.try_acquire(dict(likes), time.monotonic())
            if wait_s > 0:
                raise ApiError(429, "rate_limited", "too many likes; slow down", "type",
                               retry_after_s=max(1, math.ceil(min(wait_s, 3600))))
        messages, event_ids = [], []
        for event in events:
            schema, topic, record = to_avro(event, now)
            event_id = str(record["event_id"])
            event_ids.append(event_id)
            if self.recent.contains_fresh(event_id, time.monotonic()):
                continue  # acknowledged before: a retry whose answer the client lost
            # The models validated every field; tests/unit/test_ingest_events.py proves each record
            # they can produce passes the codec's own validation.
            value = encode(schema, record, validate_record=False)
            messages.append(OutgoingMessage(topic, event.video_id.encode(), value))
        started = time.perf_counter()
        await self.producer.produce_all(messages)
        self.metrics.produce_latency.observe(time.perf_counter() - started)
        self.recent.add_all(event_ids, time.monotonic())
        for event_type, count in Counter(event.type for event in events).items():
            self.metrics.accepted.labels(event_type).inc(count)
        return event_ids

    def trust_now(self) -> datetime:
        """The trust-and-safety clock (deadlines, overdue complaints): LUSTRAX_TRUST_CLOCK_OFFSET_S ahead."""
        return datetime.now(UTC) + timedelta(seconds=self.settings.trust_clock_offset_s)

    def limit_reports(self, client_ip: str) -> None:
        """Notices and complaints need no account: bounded per client IP (429 beyond)."""
        wait_s = self.report_limiter.try_acquire({client_ip: 1}, time.monotonic())
        if wait_s > 0:
            raise ApiError(429, "rate_limited", "too many reports from this address; slow down", None,
                           retry_after_s=max(1, math.ceil(min(wait_s, 3600))))

    async def produce_records(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Encode and produce (schema, record) pairs keyed by video_id; returns once all are acknowledged."""
        await self.producer.produce_all([OutgoingMessage(TOPIC_BY_SCHEMA[schema].name, record["video_id"].encode(),
                                                         encode(schema, record)) for schema, record in events])

    async def storage(self, call: Any, *args: Any) -> Any:
        """A blocking S3 call off the event loop; S3 trouble is a 503, not a 500."""
        try:
            return await asyncio.to_thread(call, *args)
        except (ClientError, BotoCoreError) as exc:
            raise ApiError(503, "storage_unavailable", f"object storage failed: {exc}", None, retry_after_s=5) \
                from None

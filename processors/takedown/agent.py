"""The takedown processor: the trust-and-safety topics folded into a case book, the state machine
asked what is due, each effect performed (S3 first, then its events, acknowledged by the broker).

Not a Faust agent: the repeat-infringer rule needs every uploader's strikes and a restore needs
every case of its video, across partitions and topics, so the processor reads every partition of
every trust topic from the beginning (catalog/feed.py, no group, no commits), as the catalog
does. A restart rebuilds the book and finds nothing due that was done: every effect's events are
in the book once produced. A crash between an S3 action and its events repeats the action (it is
idempotent) and the events (same ids). Run one; a second would repeat the same effects harmlessly.

The clock is injected (`Clock`): `lustrax worker takedown` uses the wall clock plus
LUSTRAX_TRUST_CLOCK_OFFSET_S; the tests drive a clock of their own. Deadlines are checked on every
batch of events and every LUSTRAX_TAKEDOWN_TICK_S.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from catalog.cases import CaseBook
from catalog.feed import TRUST_TOPICS, CatalogFeed
from common.errors import LustraxError
from common.settings import Settings
from infra.edge.invalidation import (
    PendingInvalidations,
    VideoInvalidator,
    video_invalidator,
)
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from infra.s3.buckets import delete_prefix, read_object, s3_client
from infra.s3.layout import moderation_record_key, public_prefix
from processors.loopback import JsonHandler
from processors.moderation.moderate import ModerationRecord
from processors.moderation.publish import publish_ladder
from processors.takedown.machine import REMOVE, REPUBLISH, Effect, Policy, due
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
MAX_EFFECTS_PER_PASS = 10_000


def _key(effect: Effect) -> str:
    return str(effect.events[0][1]["event_id"])


def offset_clock(offset_s: float) -> Clock:
    return lambda: datetime.now(UTC) + timedelta(seconds=offset_s)


def policy_of(settings: Settings) -> Policy:
    return Policy(settings.dmca_restore_business_days, settings.trust_holiday_dates,
                  settings.repeat_infringer_strikes, settings.complaint_hide_reason_set)


class _WakingBook:
    """The book as the feed's read model: each batch folded in wakes the agent."""

    def __init__(self, book: CaseBook, wake: threading.Event) -> None:
        self.book, self.wake = book, wake

    def __len__(self) -> int:
        return len(self.book)

    def apply_all(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        events = list(events)
        self.book.apply_all(events)
        if events:
            self.wake.set()


class TakedownAgent:
    def __init__(self, settings: Settings, clock: Clock, s3: Any | None = None,
                 invalidator: VideoInvalidator | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.s3 = s3 or s3_client(settings)
        invalidator = invalidator or video_invalidator(settings)
        self.invalidations = None if invalidator is None else PendingInvalidations(invalidator)
        self.policy = policy_of(settings)
        self.book = CaseBook()
        self.stopping = threading.Event()
        self.wake = threading.Event()  # a new batch arrived, or a test moved the clock
        self.feed = CatalogFeed(settings.kafka_bootstrap, _WakingBook(self.book, self.wake), TRUST_TOPICS,
                                name="takedown")
        self.performed = 0
        self.last_error: str | None = None

    def run(self) -> None:
        self.feed.start()
        try:
            while not self.stopping.is_set():
                if self.feed.caught_up.is_set():
                    self.reconcile()
                self.wake.wait(self.settings.takedown_tick_s if self.feed.caught_up.is_set() else 0.2)
                self.wake.clear()
        finally:
            self.feed.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def reconcile(self) -> int:
        """Perform what is due, one effect at a time (each one's events folded before the next is
        chosen: a strike count is exact); how many were performed. An effect that fails is left for
        the next tick (S3 or the broker away) and the others go on."""
        if self.invalidations:
            self.invalidations.retry()
        done, failed = 0, set()
        while done < MAX_EFFECTS_PER_PASS and not self.stopping.is_set():
            effects = [e for e in due(self.book, self.policy, self.clock()) if _key(e) not in failed]
            if not effects:
                break
            effect = effects[0]
            try:
                self.perform(effect)
            except (ClientError, BotoCoreError, LustraxError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("takedown effect on %s failed, retrying at the next tick: %s", effect.video_id, exc)
                failed.add(_key(effect))
                continue
            except Exception:  # noqa: BLE001 - a bug on one case must not stop every other case
                self.last_error = f"unexpected error on {effect.video_id}"
                log.exception("takedown effect on %s failed unexpectedly", effect.video_id)
                failed.add(_key(effect))
                continue
            self.last_error = None
            done += 1
        self.performed += done
        return done

    def perform(self, effect: Effect) -> None:
        events = [(schema, dict(record)) for schema, record in effect.events]
        if effect.action == REMOVE:
            removed = sum(delete_prefix(self.s3, self.settings.s3_public_bucket, public_prefix(effect.video_id, premium))
                          for premium in (False, True))
            for schema, record in events:
                if schema == "VideoTakenDown":
                    record["removed_objects"] = removed
        elif effect.action == REPUBLISH and not self._republish(effect.video_id):
            for schema, record in events:
                if schema == "VideoRestored":
                    record["republished"] = False
        produce_acknowledged(self.settings.kafka_bootstrap, [
            OutgoingMessage(TOPIC_BY_SCHEMA[schema].name, effect.video_id.encode(), encode(schema, record))
            for schema, record in events])
        self.book.apply_all(events)
        log.info("%s: %s", effect.video_id, ", ".join(schema for schema, _ in events))
        if effect.action == REMOVE and self.invalidations is not None:
            # After the delete, so that an edge that misses cannot fetch the objects again; after the
            # events, so that CloudFront's quota never holds a takedown back (a refusal is retried).
            self.invalidations.add(effect.video_id, _key(effect))
            self.invalidations.retry()

    def _republish(self, video_id: str) -> bool:
        """The moderation publisher's copy staging -> public again; False if it was never approved."""
        body = read_object(self.s3, self.settings.s3_staging_bucket, moderation_record_key(video_id))
        record = None if body is None else ModerationRecord.from_json(body)
        if record is None or record.decision != "APPROVED":
            return False
        publish_ladder(self.s3, self.settings.s3_staging_bucket, self.settings.s3_public_bucket, video_id,
                       record.premium, record.poster_key)
        return True


def _health_handler(agent: TakedownAgent) -> type[JsonHandler]:
    class Health(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            ready = self.path == "/healthz" and agent.feed.caught_up.is_set()
            self.reply(200 if ready else (404 if self.path != "/healthz" else 503),
                       {"status": "ok" if ready else "starting", "cases": len(agent.book),
                        "performed": agent.performed, "last_error": agent.last_error,
                        "invalidations_pending": len(agent.invalidations or ())})

    return Health


def run_worker(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = TakedownAgent(settings, offset_clock(settings.trust_clock_offset_s))

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = ThreadingHTTPServer(("127.0.0.1", settings.takedown_web_port), _health_handler(agent))
    threading.Thread(target=server.serve_forever, name="takedown-health", daemon=True).start()
    try:
        agent.run()
    finally:
        server.shutdown()

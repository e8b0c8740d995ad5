"""`lustrax worker recs`: the recs worker (docs/recommendations.md).

- Holds Milvus Lite (unless LUSTRAX_MILVUS_URI names a server) and serves it on loopback.
- Consumes watch ticks (group `lustrax-recs`) into the users' rows: history, embedding, finished
  videos, candidates. Offsets are committed after the rows are written: a crash re-reads, and the
  merge makes that harmless. An undecodable tick is parked on the dead-letter topic.
- Trains the video embeddings from ClickHouse once the catalog is caught up, then every
  LUSTRAX_RECS_TRAIN_INTERVAL_S, and at once on `lustrax recs train`; gives videos published in
  between cold-start embeddings within seconds.
- Answers on loopback LUSTRAX_RECS_WEB_PORT: `GET /healthz`, `POST /v1/train` (admin or service
  token; the training's report once done).
Everything that writes runs on the main thread (model.py: one writer).
"""

from __future__ import annotations

import logging
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from catalog.feed import CatalogFeed
from catalog.projection import CatalogProjection
from common.errors import ApiError, LustraxError
from common.settings import Settings
from common.tokens import PRIVILEGED_ROLES, verify_token
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from infra.milvus.store import LiteServer, VectorStore, lite_directory
from processors.loopback import JsonHandler
from processors.recs.model import RecsModel, TrainReport, read_watches
from schemas.codec import decode
from schemas.dead_letters import DeadLetter
from schemas.errors import SchemaError
from schemas.topics import DEAD_LETTER_TOPIC, TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
GROUP_ID = "lustrax-recs"
CONSUMER = "recs"
NEW_VIDEOS_EVERY_S = 2.0
FLUSH_USERS_EVERY_S = 10.0  # users' rows written since are sealed (model.py: faster reads)
RETRY_TRAINING_S = 30.0
TRAIN_WAIT_S = 600.0


@dataclass
class TrainRequest:
    done: threading.Event = field(default_factory=threading.Event)
    report: TrainReport | None = None
    error: str | None = None


class RecsWorker:
    def __init__(self, settings: Settings, store: VectorStore, catalog: CatalogProjection) -> None:
        self.settings = settings
        self.model = RecsModel(settings, store, catalog)
        self.catalog_ready = threading.Event()
        self.requests: queue.Queue[TrainRequest] = queue.Queue()
        self.stopping = threading.Event()
        self.next_training = 0.0  # monotonic; 0: as soon as the catalog is caught up
        self.ticks = 0  # watch ticks applied since the start
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap, "group.id": GROUP_ID, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "max.poll.interval.ms": 900_000,
            "partition.assignment.strategy": "cooperative-sticky",
            "group.instance.id": f"{GROUP_ID}-{socket.gethostname()}",  # a restart takes its partitions back at once
        }, logger=log)

    def run(self) -> None:
        self.consumer.subscribe([TOPIC_BY_SCHEMA["WatchTick"].name])
        next_videos = next_flush = 0.0
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(num_messages=2000, timeout=0.5)
                if messages:
                    self._take(messages)
                now = time.monotonic()
                if self.catalog_ready.is_set():
                    self._train_if_due(now)
                    if now >= next_videos:
                        added = self.model.add_new_videos()
                        if added:
                            log.info("cold-start embeddings for %d new video(s)", added)
                        next_videos = now + NEW_VIDEOS_EVERY_S
                if now >= next_flush:
                    self.model.flush_users()
                    next_flush = now + FLUSH_USERS_EVERY_S
        finally:
            self.consumer.close()

    def _take(self, messages: list[Message]) -> None:
        ticks, parked = [], []
        for message in messages:
            if message.error():
                if message.error().fatal():
                    raise KafkaException(message.error())  # exit: the supervisor starts a fresh one
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", message.error())
                continue
            try:
                ticks.append(decode(message.value(), "WatchTick")[1])
            except SchemaError as exc:
                parked.append(DeadLetter(CONSUMER, f"undecodable WatchTick: {exc}", message.topic(),
                                         message.partition(), message.offset(), message.key() or b"",
                                         message.value() or b""))
        if parked:
            produce_acknowledged(self.settings.kafka_bootstrap, [
                OutgoingMessage(DEAD_LETTER_TOPIC.name, p.key, p.value, p.headers()) for p in parked])
        self.model.apply_ticks(ticks)
        self.ticks += len(ticks)
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:  # e.g. the partitions moved: whoever reads them next merges them again
            log.warning("offset commit failed (%s); the ticks will be read again", exc)

    def _train_if_due(self, now: float) -> None:
        asked: list[TrainRequest] = []
        while not self.requests.empty():
            asked.append(self.requests.get_nowait())
        if not asked and now < self.next_training:
            return
        try:
            report: TrainReport | None = self.model.train(read_watches(self.settings))
            error = None
            self.next_training = now + self.settings.recs_train_interval_s
        except LustraxError as exc:  # ClickHouse or Milvus not answering: try again soon
            report, error = None, str(exc)
            log.warning("training failed (%s); retrying in %.0f s", exc, RETRY_TRAINING_S)
            self.next_training = now + RETRY_TRAINING_S
        for request in asked:
            request.report, request.error = report, error
            request.done.set()

    def train_now(self) -> TrainRequest:
        """Ask the main loop to train (from another thread) and wait for it."""
        request = TrainRequest()
        self.requests.put(request)
        if not request.done.wait(TRAIN_WAIT_S):
            request.error = f"the training did not finish within {TRAIN_WAIT_S:.0f} s"
        return request


def make_handler(settings: Settings, worker: RecsWorker) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path != "/healthz":
                self.reply(404, ApiError(404, "not_found", "no such path").body())
                return
            model = worker.model
            self.reply(200, {"status": "ok", "videos": len(model.vectors), "learned": len(model.learned),
                              "model": model.model, "catalog_caught_up": worker.catalog_ready.is_set(),
                              "ticks": worker.ticks})

        def do_POST(self) -> None:  # noqa: N802
            try:
                if self.path != "/v1/train":
                    raise ApiError(404, "not_found", "no such path")
                principal = verify_token(settings.jwt_signing_secret, self.headers.get("Authorization"),
                                         max_ttl_s=settings.jwt_max_ttl_s)
                if not principal.roles & PRIVILEGED_ROLES:
                    raise ApiError(403, "forbidden", "training needs an admin or service token", "authorization")
                request = worker.train_now()
                if request.report is None:
                    raise ApiError(503, "training_failed", request.error or "the training failed")
                self.reply(200, request.report.as_dict())
            except ApiError as error:
                self.reply(error.status, error.body())

    return Handler


def run_worker(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lite = LiteServer(lite_directory(settings), settings.recs_milvus_port) if settings.milvus_uri is None else None
    store = VectorStore(settings)
    store.ensure_collections()
    catalog = CatalogProjection()
    feed = CatalogFeed(settings.kafka_bootstrap, catalog)
    worker = RecsWorker(settings, store, catalog)

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    feed.start()
    threading.Thread(target=lambda: feed.wait_caught_up(1e9) and worker.catalog_ready.set(), daemon=True,
                     name="catalog-ready").start()
    server = ThreadingHTTPServer(("127.0.0.1", settings.recs_web_port), make_handler(settings, worker))
    threading.Thread(target=server.serve_forever, name="recs-web", daemon=True).start()
    try:
        worker.run()
    finally:
        server.shutdown()
        feed.stop()
        store.close()
        if lite is not None:
            lite.stop()

"""The vector store: video and user embeddings in Milvus, through pymilvus (docs/recommendations.md).

Production names a Milvus server (`LUSTRAX_MILVUS_URI`). Locally, Milvus Lite (pure Python,
embedded) keeps its data under LUSTRAX_HOME/data/milvus; like chDB it locks its directory, so one
process holds it: the recs worker, which serves it on loopback (`LUSTRAX_RECS_MILVUS_PORT`) with
Milvus Lite's own gRPC server, and every client (the worker too, the API) connects by URI, the
same way as to a server.

Two collections:
- `lustrax_videos`: video_id, embedding (unit, COSINE index), source (`learned` or `cold`),
  model (when the embeddings were trained, epoch ms);
- `lustrax_users`: user_id, embedding, history (JSON: video_id -> [completion, last watched ms]),
  finished (JSON list of video ids), candidates (JSON: [[video_id, cosine], ...], the nearest
  videos found by a Milvus search), model, updated_at. The API reads a user's row per request;
  the search runs when the worker writes it (a search costs Milvus Lite 5-30 ms: too slow for
  every request at 100 requests/s, and its result only changes when the user's row does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported with the module, not on first use: the first request of the API must not pay for it.
from pymilvus import DataType, MilvusClient

from common.errors import LustraxError
from common.settings import Settings

log = logging.getLogger(__name__)
VIDEOS = "lustrax_videos"
USERS = "lustrax_users"
ID_LENGTH = 128  # the ingest API's identifiers are at most 128 characters
BATCH = 1000  # rows per upsert and per query page
SEARCH_BATCH = 10  # query vectors per search request
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # as milvus-lite's own server (Milvus standalone's limit)


class VectorStoreError(LustraxError):
    """Milvus did not answer or refused a request (the message says which)."""


def milvus_uri(settings: Settings) -> str:
    return settings.milvus_uri or f"http://127.0.0.1:{settings.recs_milvus_port}"


def lite_directory(settings: Settings) -> Path:
    return settings.data_dir / "milvus"


class LiteServer:
    """Milvus Lite on `directory`, served over gRPC on loopback `port` (holds the directory's lock).
    Built as milvus-lite's own `start_server_in_thread` builds it, with one difference: pymilvus
    pings every 10 s, also between calls, which a default gRPC server answers after two pings with
    GOAWAY "too_many_pings", closing the connection that the next request must then open again."""

    def __init__(self, directory: Path, port: int) -> None:
        from concurrent import futures

        import grpc
        from milvus_lite.adapter.grpc.servicer import MilvusServicer
        from milvus_lite.db import MilvusLite
        from pymilvus.grpc_gen import milvus_pb2_grpc

        directory.mkdir(parents=True, exist_ok=True)
        # pymilvus' query iterator asks for AllocTimestamp, which Milvus Lite lacks (the iterator then
        # uses the client's clock): not an error worth a traceback in the log per query.
        logging.getLogger("grpc._server").addFilter(lambda record: "Method not implemented" not in record.getMessage())
        try:
            self._db = MilvusLite(str(directory))
        except Exception as exc:  # noqa: BLE001 - a held lock: one clear line
            raise VectorStoreError(f"Milvus Lite on {directory}: {exc}") from None
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
            ("grpc.http2.max_ping_strikes", 0)])
        milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(self._db), self._server)
        try:
            self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        except RuntimeError as exc:
            self._db.close()
            raise VectorStoreError(f"Milvus Lite: port {port}: {exc}") from None
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=0.5)
        self._db.close()


@dataclass(frozen=True)
class VideoRow:
    video_id: str
    embedding: list[float]
    source: str  # "learned" or "cold"
    model: int


@dataclass(frozen=True)
class UserRow:
    user_id: str
    embedding: list[float]
    history: dict[str, tuple[float, int]]
    finished: list[str]
    candidates: list[tuple[str, float]]
    model: int
    updated_at: int


class VectorStore:
    """The two collections over one pymilvus client; every failure is a VectorStoreError."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.dim = settings.recs_dim
        self.timeout_s = timeout_s
        try:
            # dedicated: its own channel (a shared one stays broken once its server went away)
            self.client = MilvusClient(uri=milvus_uri(settings), token=settings.milvus_token or "", timeout=timeout_s,
                                       dedicated=True)
        except Exception as exc:  # noqa: BLE001 - pymilvus raises its own and grpc's
            raise VectorStoreError(f"Milvus at {milvus_uri(settings)} does not answer: {exc}") from None

    def close(self) -> None:
        self.client.close()

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(*args, timeout=self.timeout_s, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise VectorStoreError(f"Milvus {what}: {exc}") from None

    # -- schema ----------------------------------------------------------------------------
    def ensure_collections(self) -> None:
        """Create both collections (or recreate them for another LUSTRAX_RECS_DIM) and load them."""
        for name in (VIDEOS, USERS):
            if self._call("has_collection", "has_collection", name):
                if self._dim_of(name) == self.dim:
                    self._call("load", "load_collection", name)
                    continue
                log.warning("%s holds embeddings of another dimension: recreated (the next training refills it)", name)
                self._call("drop", "drop_collection", name)
            self._create(name)

    def _dim_of(self, name: str) -> int | None:
        for field in self._call("describe", "describe_collection", name)["fields"]:
            if field["name"] == "embedding":
                return int(field["params"]["dim"])
        return None

    def _create(self, name: str) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        key = "video_id" if name == VIDEOS else "user_id"
        schema.add_field(key, DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("model", DataType.INT64)
        if name == VIDEOS:
            schema.add_field("source", DataType.VARCHAR, max_length=16)
        else:
            for field in ("history", "finished", "candidates"):
                schema.add_field(field, DataType.JSON)
            schema.add_field("updated_at", DataType.INT64)
        index = self.client.prepare_index_params()
        if name == VIDEOS:
            index.add_index("embedding", index_type="AUTOINDEX", metric_type="COSINE")
        else:
            # Users are read by id, never searched: FLAT builds nothing (an HNSW build of a sealed users'
            # segment holds Milvus Lite's process for seconds), inner product takes a zero embedding.
            index.add_index("embedding", index_type="FLAT", metric_type="IP")
        self._call("create", "create_collection", name, schema=schema, index_params=index)

    # -- videos ----------------------------------------------------------------------------
    def upsert_videos(self, rows: Sequence[VideoRow]) -> None:
        for start in range(0, len(rows), BATCH):
            self._call("upsert videos", "upsert", VIDEOS, [
                {"video_id": r.video_id, "embedding": r.embedding, "source": r.source, "model": r.model}
                for r in rows[start:start + BATCH]])

    def delete_videos(self, video_ids: Sequence[str]) -> None:
        for start in range(0, len(video_ids), BATCH):
            self._call("delete videos", "delete", VIDEOS, ids=list(video_ids[start:start + BATCH]))

    def flush(self, name: str) -> None:
        """Seal what was written to collection `name`: Milvus Lite searches unsealed rows by brute
        force and reads them several times slower (a user's row: 7 ms instead of 2)."""
        self._call("flush", "flush", name)

    def all_videos(self) -> Iterator[VideoRow]:
        for row in self._every(VIDEOS, ["video_id", "embedding", "source", "model"]):
            yield VideoRow(row["video_id"], [float(x) for x in row["embedding"]], row["source"], int(row["model"]))

    def video_embeddings(self, video_ids: Sequence[str]) -> dict[str, list[float]]:
        if not video_ids:
            return {}
        rows = self._call("get videos", "get", VIDEOS, ids=list(video_ids), output_fields=["embedding"])
        return {row["video_id"]: [float(x) for x in row["embedding"]] for row in rows}

    def nearest(self, vectors: Sequence[list[float]], limit: int) -> list[list[tuple[str, float]]]:
        """For each vector, the `limit` videos of highest cosine similarity, best first."""
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(vectors), SEARCH_BATCH):
            found = self._call("search", "search", VIDEOS, data=list(vectors[start:start + SEARCH_BATCH]),
                               limit=limit, output_fields=["video_id"])
            out += [[(str(hit["video_id"]), float(hit["distance"])) for hit in hits] for hits in found]
        return out

    # -- users -----------------------------------------------------------------------------
    def users(self, user_ids: Iterable[str], fields: Sequence[str] = ("embedding", "history", "finished",
                                                                        "candidates", "model", "updated_at")
              ) -> dict[str, UserRow]:
        ids = list(user_ids)
        out: dict[str, UserRow] = {}
        for start in range(0, len(ids), BATCH):
            for row in self._call("get users", "get", USERS, ids=ids[start:start + BATCH], output_fields=list(fields)):
                out[row["user_id"]] = _user_row(row)
        return out

    def all_user_ids(self) -> Iterator[str]:
        for row in self._every(USERS, ["user_id"]):
            yield str(row["user_id"])

    def upsert_users(self, rows: Sequence[UserRow]) -> None:
        for start in range(0, len(rows), BATCH):
            self._call("upsert users", "upsert", USERS, [{
                "user_id": r.user_id, "embedding": r.embedding, "model": r.model, "updated_at": r.updated_at,
                "history": {video: [done, at] for video, (done, at) in r.history.items()},
                "finished": r.finished, "candidates": [[video, score] for video, score in r.candidates],
            } for r in rows[start:start + BATCH]])

    def _every(self, name: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        try:
            iterator = self.client.query_iterator(name, batch_size=BATCH, output_fields=fields)
        except Exception as exc:  # noqa: BLE001
            raise VectorStoreError(f"Milvus query {name}: {exc}") from None
        try:
            while True:
                try:
                    page = iterator.next()
                except Exception as exc:  # noqa: BLE001
                    raise VectorStoreError(f"Milvus query {name}: {exc}") from None
                if not page:
                    return
                yield from page
        finally:
            iterator.close()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _user_row(row: dict[str, Any]) -> UserRow:
    history = {str(video): (float(done), int(at)) for video, (done, at) in (_json(row.get("history")) or {}).items()}
    return UserRow(str(row["user_id"]), [float(x) for x in row.get("embedding") or []], history,
                   [str(v) for v in _json(row.get("finished")) or []],
                   [(str(v), float(s)) for v, s in _json(row.get("candidates")) or []],
                   int(row.get("model") or 0), int(row.get("updated_at") or 0))

"""The sans-I/O core of the WebSocket gateway: values in, values out (no sockets, no Kafka).

- channels and who may subscribe to them;
- client messages parsed into ops, replies and error frames;
- events (decoded Avro records) turned into publications, each frame serialized once;
- per-channel sequence numbers, a bounded history and exact recovery;
- a deterministic merge of the Kafka partitions, so that every gateway instance numbers a
  channel's frames alike (docs/ws-protocol.md explains the guarantees);
- the subscription hub, rate-limited presence and the bounded map video_id -> uploader.

The server (gateways/ws/server.py) and the Kafka consumer (gateways/ws/fanout.py) only move the
values this module produces.
"""

from __future__ import annotations

import bisect
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any, Generic, TypeVar

import orjson

from common.tokens import Principal

FEED = "feed"
KINDS = ("feed", "video", "upload")
# The ids the ingest API accepts for engagement events (producers/events.py Identifier).
CHANNEL_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
# seq = Kafka timestamp in ms times this, plus the rank of the frame within its millisecond.
SEQ_PER_MS = 1024

C = TypeVar("C", bound=Hashable)


class ProtocolError(Exception):
    """A client message or channel the gateway refuses; becomes an error frame, the connection stays."""

    def __init__(self, code: str, message: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.channel = code, message, channel


# -- frames ---------------------------------------------------------------------------------------

def frame(type_: str, channel: str, seq: int | None, data: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"type": type_, "channel": channel, "seq": seq, "data": data})


def error_frame(code: str, message: str, channel: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if channel is not None:
        body["channel"] = channel
    return orjson.dumps(body)


def subscribed_frame(channel: str, seq: int, recovered: bool, epoch: str) -> bytes:
    return orjson.dumps({"type": "subscribed", "channel": channel, "seq": seq, "recovered": recovered,
                         "epoch": epoch})


def reset_frame(channel: str, seq: int, epoch: str) -> bytes:
    return orjson.dumps({"type": "reset", "channel": channel, "seq": seq, "epoch": epoch})


def unsubscribed_frame(channel: str) -> bytes:
    return orjson.dumps({"type": "unsubscribed", "channel": channel})


PONG = orjson.dumps({"type": "pong"})


def rfc3339(value: datetime | int) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value / 1000, UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- channels and permissions ---------------------------------------------------------------------

def parse_channel(name: object) -> tuple[str, str]:
    """'feed' -> ('feed', ''); 'video:ID' -> ('video', 'ID'); 'upload:ID' -> ('upload', 'ID')."""
    if not isinstance(name, str):
        raise ProtocolError("bad_channel", "a channel is a string", None)
    if name == FEED:
        return FEED, ""
    kind, sep, ident = name.partition(":")
    if not sep or kind not in ("video", "upload") or not CHANNEL_ID.fullmatch(ident):
        raise ProtocolError("bad_channel", "channels are feed, video:{id} and upload:{id}", name[:200])
    return kind, ident


def check_access(principal: Principal | None, channel: str, uploader_of: Callable[[str], str | None],
                 anonymous_feed: bool, age_verified: bool) -> None:
    """Raise ProtocolError unless `principal` (None: anonymous) may subscribe to `channel`.

    `feed` and `video:{id}` carry titles and thumbnails: adult content, only for a connection that
    passed the age gate (`age_verified`, checked by the handshake). `upload:{id}` carries an
    upload's progress and moderation outcome to its uploader, no content: it needs no age token."""
    kind, ident = parse_channel(channel)
    if kind != "upload" and not age_verified:
        raise ProtocolError("age_verification_required",
                            "this channel is adult content: connect with ?age_token= (POST /v1/age-gate)", channel)
    if principal is None:
        if kind == FEED and anonymous_feed:
            return
        raise ProtocolError("unauthenticated", "this channel needs a token", channel)
    if kind == "upload" and not principal.privileged and uploader_of(ident) != principal.user_id:
        # Unknown uploads are refused alike, so that the answer does not reveal which ids exist.
        raise ProtocolError("forbidden", "only the uploader or an admin may subscribe to an upload", channel)


def cookie_value(header: str | None, name: str) -> str | None:
    """One cookie of a Cookie header (the handshake's `lustrax_age`), None when absent or malformed."""
    if not header:
        return None
    try:
        morsel = SimpleCookie(header).get(name)
    except CookieError:
        return None
    return morsel.value if morsel is not None and morsel.value else None


# -- client messages ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resume:
    seq: int
    epoch: str | None = None


@dataclass(frozen=True)
class Subscribe:
    channels: tuple[str, ...]
    since: Mapping[str, Resume] = field(default_factory=dict)


@dataclass(frozen=True)
class Unsubscribe:
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Ping:
    pass


ClientOp = Subscribe | Unsubscribe | Ping


def _channel_list(message: Mapping[str, Any]) -> tuple[str, ...]:
    channels = message.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        raise ProtocolError("bad_message", "channels must be a non-empty list of strings")
    return tuple(dict.fromkeys(channels))


def _resume(channel: str, value: Any) -> Resume:
    if isinstance(value, Mapping):
        seq, epoch = value.get("seq"), value.get("epoch")
    else:
        seq, epoch = value, None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or (epoch is not None and not isinstance(epoch, str)):
        raise ProtocolError("bad_message", "since values are a seq (integer >= 0) or {seq, epoch}", channel)
    return Resume(seq, epoch)


def parse_client_message(raw: str | bytes) -> ClientOp:
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_json", "messages are JSON objects") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_message", "messages are JSON objects")
    op = message.get("op")
    if op == "ping":
        return Ping()
    if op == "unsubscribe":
        return Unsubscribe(_channel_list(message))
    if op == "subscribe":
        channels = _channel_list(message)
        since = message.get("since", {})
        if not isinstance(since, dict):
            raise ProtocolError("bad_message", "since must be an object {channel: seq}")
        return Subscribe(channels, {ch: _resume(ch, v) for ch, v in since.items() if ch in channels})
    raise ProtocolError("unknown_op", "op must be subscribe, unsubscribe or ping")


# -- events -> publications -----------------------------------------------------------------------

@dataclass(frozen=True)
class Publication:
    channel: str
    type: str
    data: Mapping[str, Any]


def publications(schema: str, record: Mapping[str, Any]) -> list[Publication]:
    """What an event means to subscribers (nothing for events no channel carries)."""
    video_id = record.get("video_id", "")
    upload = f"upload:{video_id}"
    if schema == "VideoPublished":
        return [Publication(FEED, "new_video", {
            "video_id": video_id, "title": record["title"], "video_url": record["video_url"],
            "thumbnail": record["thumbnail"], "premium": record["premium"],
            "published_at": rfc3339(record["published_at"])})]
    if schema == "LikeUpdate":
        return [Publication(f"video:{video_id}", "like_update", {
            "video_id": video_id, "like_count": record["like_count"], "delta": record["delta"]})]
    if schema == "TranscodeProgress":
        return [Publication(upload, "transcode_progress", {"video_id": video_id, "percent": record["percent"]})]
    if schema == "VideoTranscoded":
        return [Publication(upload, "transcoded", {
            "video_id": video_id, "duration_ms": record["duration_ms"],
            "renditions": [{"name": r["name"], "width": r["width"], "height": r["height"]}
                           for r in record["renditions"]]})]
    if schema == "TranscodeFailed":
        return [Publication(upload, "transcode_failed", {
            "video_id": video_id, "reason": record["reason"], "retryable": record["retryable"],
            "attempt": record["attempt"]})]
    if schema == "ModerationDecided":
        return [Publication(upload, "moderation", {
            "video_id": video_id, "decision": str(record["decision"]).lower(), "reason": record.get("reason")})]
    if schema == "VideoTakenDown":  # the trust-and-safety issue's event, once it exists
        removed = {"video_id": video_id, "reason": record.get("reason")}
        return [Publication(FEED, "video_removed", removed), Publication(f"video:{video_id}", "video_removed", removed)]
    return []


class UploaderIndex:
    """video_id -> uploader_id from VideoUploaded events, the oldest forgotten past `max_entries`."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._uploaders: OrderedDict[str, str] = OrderedDict()

    def add(self, video_id: str, uploader_id: str) -> None:
        self._uploaders[video_id] = uploader_id
        self._uploaders.move_to_end(video_id)
        if len(self._uploaders) > self.max_entries:
            self._uploaders.popitem(last=False)

    def get(self, video_id: str) -> str | None:
        return self._uploaders.get(video_id)

    def __len__(self) -> int:
        return len(self._uploaders)


# -- the deterministic merge of partitions --------------------------------------------------------

@dataclass(frozen=True)
class Positioned:
    """An event with its Kafka position; `source` ranks its (topic, partition) among all sources."""

    ts_ms: int
    source: int
    offset: int
    payload: Any
    arrived: float = 0.0

    @property
    def key(self) -> tuple[int, int, int]:
        return self.ts_ms, self.source, self.offset


class Merger:
    """Merges the partitions' streams into one order that does not depend on fetch timing.

    Each source is read in offset order; across sources the head with the smallest
    (timestamp, source, offset) goes first, but only once every other source either has a head
    waiting, or is caught up (nothing more on the broker) and the head arrived `settle_s` ago:
    one produce request may append to several partitions, and the high watermark the consumer
    caches for another partition can predate the append; the next fetch responses (every
    fetch.wait.max.ms when idle) bring it up to date. A head that waited `max_hold_s` goes anyway,
    so that a stalled partition does not stall the gateway.
    """

    def __init__(self, sources: int, max_hold_s: float = 0.2, settle_s: float = 0.03) -> None:
        self.queues: list[deque[Positioned]] = [deque() for _ in range(sources)]
        self.max_hold_s = max_hold_s
        self.settle_s = settle_s

    def push(self, item: Positioned) -> None:
        self.queues[item.source].append(item)

    def pending(self) -> int:
        return sum(len(q) for q in self.queues)

    def pop_ready(self, caught_up: Callable[[int], bool], now: float) -> list[Positioned]:
        """`now`: the clock of the arrival times (monotonic seconds)."""
        ready: list[Positioned] = []
        while True:
            heads = [q[0] for q in self.queues if q]
            if not heads:
                return ready
            first = min(heads, key=lambda item: item.key)
            empty = [i for i, q in enumerate(self.queues) if not q]
            unsure = any(not caught_up(i) for i in empty) or (bool(empty) and now - first.arrived < self.settle_s)
            if unsure and now - first.arrived < self.max_hold_s:
                return ready
            ready.append(self.queues[first.source].popleft())


# -- sequence numbers, history, recovery ----------------------------------------------------------

@dataclass
class ChannelLog:
    last_seq: int = 0
    dropped_seq: int = 0  # the newest frame no longer kept
    seqs: list[int] = field(default_factory=list)  # parallel to frames, ascending (bisect)
    frames: list[tuple[float, bytes]] = field(default_factory=list)  # (event time s, frame)


@dataclass(frozen=True)
class Recovery:
    recovered: bool
    seq: int  # the channel's current seq
    frames: tuple[bytes, ...] = ()
    skip_through: int = 0  # the client is ahead of this instance: drop live frames up to this seq


class History:
    """Per channel: the last seq and the last `max_frames` frames younger than `max_age_s`.

    seq = max(timestamp_ms * SEQ_PER_MS, previous seq + 1): derived from the Kafka timestamps in
    the merged order, so every instance and every restart numbers the same event alike.
    `horizon` is the seq before which this instance may not know a channel's events (where its
    replay started, or what it forgot to stay bounded): a resume point older than that is reset.
    """

    def __init__(self, max_frames: int, max_age_s: float, epoch: str, horizon: int = 0,
                 max_channels: int = 100_000) -> None:
        self.max_frames, self.max_age_s, self.epoch = max_frames, max_age_s, epoch
        self.horizon = horizon
        self.max_channels = max_channels
        self.channels: OrderedDict[str, ChannelLog] = OrderedDict()

    def append(self, pub: Publication, ts_ms: int, now: float) -> tuple[int, bytes]:
        log = self.channels.get(pub.channel)
        if log is None:
            log = self.channels[pub.channel] = ChannelLog()
            if len(self.channels) > self.max_channels:
                _, forgotten = self.channels.popitem(last=False)
                self.horizon = max(self.horizon, forgotten.last_seq)
        else:
            self.channels.move_to_end(pub.channel)
        seq = max(ts_ms * SEQ_PER_MS, log.last_seq + 1)
        data = frame(pub.type, pub.channel, seq, pub.data)
        log.last_seq = seq
        log.seqs.append(seq)
        # The event's own time ages it: every instance and every replay trims alike.
        log.frames.append((ts_ms / 1000, data))
        self._trim(log, now)
        return seq, data

    def _trim(self, log: ChannelLog, now: float) -> None:
        drop = max(0, len(log.frames) - self.max_frames)
        while drop < len(log.frames) and now - log.frames[drop][0] > self.max_age_s:
            drop += 1
        if drop:
            log.dropped_seq = log.seqs[drop - 1]
            del log.seqs[:drop], log.frames[:drop]

    def expire(self, now: float) -> int:
        """Trim every channel by age (the server calls it now and then: idle channels are otherwise
        trimmed only when used); returns the frames still held."""
        held = 0
        for log in self.channels.values():
            if log.frames and now - log.frames[0][0] > self.max_age_s:
                self._trim(log, now)
            held += len(log.frames)
        return held

    def last_seq(self, channel: str) -> int:
        log = self.channels.get(channel)
        return log.last_seq if log else 0

    def frames_of(self, channel: str, now: float) -> list[bytes]:
        log = self.channels.get(channel)
        if log is None:
            return []
        self._trim(log, now)
        return [data for _, data in log.frames]

    def recover(self, channel: str, resume: Resume, now: float) -> Recovery:
        """Every frame after `resume.seq` in order, or recovered=False: never a partial recovery.

        The history holds every frame of the channel after its floor: the last frame it dropped, or
        the horizon. A resume point at or past the floor is recovered; one before it is reset.
        """
        log = self.channels.get(channel)
        current = log.last_seq if log else 0
        if resume.epoch is not None and resume.epoch != self.epoch:
            return Recovery(False, current)
        floor = self.horizon
        if log is not None:
            self._trim(log, now)
            floor = max(floor, log.dropped_seq)
        if resume.seq < floor:
            return Recovery(False, current)
        if log is None or resume.seq >= log.last_seq:
            # Nothing missed; a client ahead of this instance (another one was faster) must not see
            # the frames up to its seq again when they arrive here.
            return Recovery(True, current, (), skip_through=resume.seq if resume.seq > current else 0)
        at = bisect.bisect_right(log.seqs, resume.seq)
        return Recovery(True, current, tuple(data for _, data in log.frames[at:]))


# -- subscriptions --------------------------------------------------------------------------------

class Hub(Generic[C]):
    """channel -> subscribers. A subscriber that is ahead of this instance (`skip_through`) waits
    in `pending` until the channel passes its seq, so that it never sees a frame twice."""

    def __init__(self) -> None:
        self.live: dict[str, set[C]] = {}
        self.pending: dict[str, dict[C, int]] = {}
        self.of: dict[C, set[str]] = {}

    def subscribe(self, conn: C, channel: str, skip_through: int = 0) -> None:
        self.unsubscribe(conn, channel)
        if skip_through:
            self.pending.setdefault(channel, {})[conn] = skip_through
        else:
            self.live.setdefault(channel, set()).add(conn)
        self.of.setdefault(conn, set()).add(channel)

    def unsubscribe(self, conn: C, channel: str) -> bool:
        was = channel in self.of.get(conn, ())
        for table in (self.live, self.pending):
            members = table.get(channel)
            if members is not None and conn in members:
                if isinstance(members, dict):
                    del members[conn]
                else:
                    members.discard(conn)
                if not members:
                    del table[channel]
        if was:
            self.of[conn].discard(channel)
        return was

    def drop(self, conn: C) -> list[str]:
        channels = list(self.of.get(conn, ()))
        for channel in channels:
            self.unsubscribe(conn, channel)
        self.of.pop(conn, None)
        return channels

    def channels_of(self, conn: C) -> set[str]:
        return self.of.get(conn, set())

    def count(self, channel: str) -> int:
        return len(self.live.get(channel, ())) + len(self.pending.get(channel, ()))

    def recipients(self, channel: str, seq: int) -> tuple[set[C], list[C]]:
        """(live subscribers, pending ones that this seq brings level and now join them)."""
        waiting = self.pending.get(channel)
        joined: list[C] = []
        if waiting:
            joined = [conn for conn, through in waiting.items() if seq > through]
            for conn in joined:
                del waiting[conn]
                self.live.setdefault(channel, set()).add(conn)
            if not waiting:
                del self.pending[channel]
        live = self.live.get(channel, set())
        return (live - set(joined) if joined else live), joined

    def members(self, channel: str) -> list[C]:
        return [*self.live.get(channel, ()), *self.pending.get(channel, ())]

    def subscriptions(self) -> int:
        return sum(len(s) for s in self.of.values())


class Presence:
    """How many watch each video channel, sent at most every `interval_s` and only on change."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.sent: dict[str, int] = {}
        self.changed: set[str] = set()
        self.last_round = float("-inf")

    def touch(self, channel: str) -> None:
        if channel.startswith("video:"):
            self.changed.add(channel)

    def due(self, count: Callable[[str], int], now: float) -> list[tuple[str, bytes]]:
        if now - self.last_round < self.interval_s or not self.changed:
            return []
        self.last_round = now
        out: list[tuple[str, bytes]] = []
        for channel in sorted(self.changed):
            watching = count(channel)
            if self.sent.get(channel) != watching:
                out.append((channel, frame("presence", channel, None,
                                           {"video_id": channel.partition(":")[2], "watching": watching})))
            if watching:
                self.sent[channel] = watching
            else:
                self.sent.pop(channel, None)
        self.changed.clear()
        return out


# -- a connection's session -----------------------------------------------------------------------

@dataclass
class Session(Generic[C]):
    conn: C
    principal: Principal | None
    age_until: float = 0.0  # the handshake's age token expires then (epoch s); 0: none, no adult channel


@dataclass(frozen=True)
class Limits:
    max_channels: int = 128
    anonymous_feed: bool = True


@dataclass
class Delivery(Generic[C]):
    """One channel's frames of a batch, in seq order, to be written to each recipient in one piece."""

    channel: str
    frames: list[bytes]
    live: set[C]  # subscribers that get every frame (may be the hub's own set: iterate, do not keep)
    joined: dict[C, int] = field(default_factory=dict)  # came level at frames[i]: they get frames[i:]
    ts_ms: list[int] = field(default_factory=list)  # each frame's event time (the delivery-lag metric)


@dataclass
class Outcome:
    """What handling one client message produced: frames for that client, stats for the metrics."""

    replies: list[bytes] = field(default_factory=list)
    recovered: int = 0
    reset: int = 0


class Core(Generic[C]):
    """The gateway's state: history, subscriptions, uploaders, presence; pure methods over it."""

    def __init__(self, history: History, limits: Limits, presence_interval_s: float = 2.0) -> None:
        self.history = history
        self.limits = limits
        self.hub: Hub[C] = Hub()
        self.uploaders = UploaderIndex()
        self.presence = Presence(presence_interval_s)

    # client -> server
    def handle(self, session: Session[C], raw: str | bytes, now: float) -> Outcome:
        out = Outcome()
        try:
            op = parse_client_message(raw)
        except ProtocolError as exc:
            out.replies.append(error_frame(exc.code, exc.message, exc.channel))
            return out
        if isinstance(op, Ping):
            out.replies.append(PONG)
        elif isinstance(op, Unsubscribe):
            for channel in op.channels:
                if self.hub.unsubscribe(session.conn, channel):
                    self.presence.touch(channel)
                out.replies.append(unsubscribed_frame(channel))
        else:
            self._subscribe(session, op, now, out)
        return out

    def _subscribe(self, session: Session[C], op: Subscribe, now: float, out: Outcome) -> None:
        # `now` is wall-clock time (time.time()): the token's exp is too.
        expired = session.principal is not None and session.principal.expires_at <= now
        for channel in op.channels:
            try:
                if expired:
                    raise ProtocolError("token_expired", "the token has expired: reconnect with a new one", channel)
                check_access(session.principal, channel, self.uploaders.get, self.limits.anonymous_feed,
                             session.age_until > now)
                current = self.hub.channels_of(session.conn)
                if channel not in current and len(current) >= self.limits.max_channels:
                    raise ProtocolError("too_many_channels",
                                        f"at most {self.limits.max_channels} channels per connection", channel)
            except ProtocolError as exc:
                out.replies.append(error_frame(exc.code, exc.message, exc.channel))
                continue
            resume = op.since.get(channel)
            if resume is None:
                self.hub.subscribe(session.conn, channel)
                out.replies.append(subscribed_frame(channel, self.history.last_seq(channel), False, self.history.epoch))
            else:
                got = self.history.recover(channel, resume, now)
                self.hub.subscribe(session.conn, channel, got.skip_through)
                out.replies.append(subscribed_frame(channel, got.seq, got.recovered, self.history.epoch))
                if got.recovered:
                    out.replies.extend(got.frames)
                    out.recovered += 1
                else:
                    out.replies.append(reset_frame(channel, got.seq, self.history.epoch))
                    out.reset += 1
            self.presence.touch(channel)

    def disconnect(self, conn: C) -> None:
        for channel in self.hub.drop(conn):
            self.presence.touch(channel)

    # Kafka -> clients
    def observe(self, schema: str, record: Mapping[str, Any]) -> list[Publication]:
        if schema == "VideoUploaded":
            self.uploaders.add(record["video_id"], record["uploader_id"])
        return publications(schema, record)

    def publish(self, pub: Publication, ts_ms: int, now: float) -> tuple[bytes, set[C], list[C]]:
        """Sequence and store one publication; its frame (serialized once) and its recipients."""
        seq, data = self.history.append(pub, ts_ms, now)
        live, joined = self.hub.recipients(pub.channel, seq)
        return data, live, joined

    def publish_batch(self, items: Iterable[tuple[Publication, int]], now: float) -> list[Delivery[C]]:
        """publish() each (publication, event time ms) in order, grouped by channel: a recipient then
        gets all of a channel's frames of the batch in one write, and a batch that piled up while
        the loop was busy costs one write per connection, not one per frame."""
        by_channel: dict[str, Delivery[C]] = {}
        for pub, ts_ms in items:
            data, _, joined = self.publish(pub, ts_ms, now)
            delivery = by_channel.get(pub.channel)
            if delivery is None:
                delivery = by_channel[pub.channel] = Delivery(pub.channel, [], set())
            for conn in joined:
                delivery.joined[conn] = len(delivery.frames)
            delivery.frames.append(data)
            delivery.ts_ms.append(ts_ms)
        for delivery in by_channel.values():
            # Nobody subscribes or leaves within a batch: the live set now is the one of its first
            # frame plus those who joined on the way.
            live = self.hub.live.get(delivery.channel, set())
            delivery.live = live - delivery.joined.keys() if delivery.joined else live
        return list(by_channel.values())


"""`lustrax demo`: the whole flow on a running stack, shown step by step (docs/page.md).

stack (every component answers) -> clip (ffmpeg makes a test pattern with a tone) -> upload
(POST /v1/uploads, the presigned PUT, complete) -> transcode -> moderation -> publish (followed live
on the gateway's `upload:{id}` and `feed` channels) -> playlist (the master playlist from the CDN)
-> simulate (traffic through the API, the new video the most watched) -> like_update (on
`video:{id}`) -> trending (the analysts' trending_now query on ClickHouse). Any step that fails
ends the demo with a DemoFailed naming it; the CLI prints it and exits 1.

The clip is colour bars and a moving test pattern (lavfi `testsrc2`) with a sine tone: the local
NudeNet model finds nothing in it, and the default policy publishes what it was blind to, so it is
approved (tests/integration/test_page.py runs the demo on the real pipeline).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from common.errors import LustraxError
from common.settings import Settings
from common.tokens import issue_token
from infra.clickhouse.analyst import format_table, query_file, run_sql
from producers.client import AsyncIngestClient, IngestClientError
from producers.simulate import simulate

STEPS = ("stack", "clip", "upload", "transcode", "moderation", "publish", "playlist", "simulate", "like_update",
         "trending")
DEMO_USER = "demo"
CLIP_SECONDS = 6
SUBSCRIBE_RETRY_S = 0.3
# What the demo uses besides the API and the gateway (checked at the URLs it was given).
NEEDED_COMPONENTS = ("kafka", "s3", "clickhouse", "edge", "transcode", "moderation", "sink", "heat")
STACK_WAIT_S = 30.0  # for the API's catalog to catch up after `lustrax up`
BAR_WIDTH = 30


class DemoFailed(LustraxError):
    """A step of the demo failed; `step` is one of STEPS."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"demo failed at step '{step}': {message}")
        self.step = step


@dataclass(frozen=True)
class DemoOptions:
    api_url: str
    gateway_url: str
    simulate_s: float = 15.0
    rate: float = 100.0
    timeout_s: float = 300.0  # upload complete -> published
    wait_s: float = 30.0  # for like_update and trending after the traffic
    clip_s: int = CLIP_SECONDS


def clip_command(ffmpeg: str, dest: Path, seconds: int = CLIP_SECONDS) -> list[str]:
    """A 720p25 H.264/AAC MP4 of ffmpeg's test pattern (colour bars, a moving gradient, a counter)
    and a 440 Hz tone: what `lustrax demo` uploads. Pure."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-y", "-v", "error",
            "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
            "-movflags", "+faststart", str(dest)]


def http_of(ws_url: str, path: str) -> str:
    """The gateway's HTTP URL for `path` on the same host and port (ws -> http, wss -> https). Pure."""
    parts = urlsplit(ws_url)
    return urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, path, "", ""))


@dataclass
class UploadFollower:
    """Follows one upload's frames to its publication (pure): which step it is in, its progress,
    and a DemoFailed for a frame that ends it otherwise."""

    video_id: str
    step: str = "transcode"
    percent: float = 0.0
    decision: str | None = None
    published: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def feed(self, frame: dict[str, Any]) -> None:
        data = frame.get("data") or {}
        if data.get("video_id") != self.video_id:
            return
        kind = frame.get("type")
        if kind == "transcode_progress":
            self.percent = max(self.percent, float(data.get("percent") or 0))
        elif kind == "transcode_failed":
            reason = f"attempt {data.get('attempt')}: {data.get('reason')}"
            if not data.get("retryable"):
                raise DemoFailed("transcode", f"the transcoder gave up on {self.video_id} ({reason})")
            self.notes.append(f"transcode failed, retrying ({reason})")
        elif kind == "transcoded":
            self.percent = 100.0
            self.step = "moderation" if self.step == "transcode" else self.step
        elif kind == "moderation":
            self.decision = str(data.get("decision"))
            if self.decision != "approved":
                outcome = "sent to human review" if self.decision == "needs_review" else self.decision
                raise DemoFailed("moderation", f"{self.video_id} was {outcome}"
                                 + (f": {data['reason']}" if data.get("reason") else "")
                                 + " (see `lustrax review list`)")
            self.step = "publish"
        elif kind == "new_video":
            self.published = data
            self.step = "published"


class Display:
    """Step lines and a progress bar: rewritten in place on a terminal, a line per 25 % elsewhere."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._shown = -1.0
        self._open = False

    def step(self, name: str, text: str) -> None:
        self._end_bar()
        index = STEPS.index(name) + 1 if name in STEPS else 0
        print(f"[{index:>2}/{len(STEPS)}] {name:<11} {text}", file=self.out, flush=True)

    def info(self, text: str) -> None:
        self._end_bar()
        print(f"        {text}", file=self.out, flush=True)

    def progress(self, label: str, percent: float, elapsed_s: float) -> None:
        filled = round(BAR_WIDTH * min(percent, 100) / 100)
        line = f"        {label:<11} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:5.1f} %  {elapsed_s:5.1f} s"
        if self.tty:
            self.out.write("\r" + line)
            self.out.flush()
            self._open = True
        elif percent >= self._shown + 25 or (percent >= 100 > self._shown):
            print(line, file=self.out, flush=True)
            self._shown = percent

    def _end_bar(self) -> None:
        if self._open:
            self.out.write("\n")
            self._open = False
        self._shown = -1.0


class GatewayClient:
    """One WebSocket connection to the gateway; every frame it receives is kept in `frames`."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.closed: str | None = None

    @classmethod
    async def open(cls, url: str, token: str, age_token: str) -> GatewayClient:
        try:
            socket = await connect(f"{url}?token={token}&age_token={age_token}", open_timeout=10, max_size=1 << 20)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise DemoFailed("stack", f"cannot connect to the gateway at {url}: {exc}") from None
        return cls(socket)

    async def _read(self) -> None:
        try:
            async for message in self.socket:
                frame = json.loads(message)
                async with self._arrived:
                    self.frames.append(frame)
                    self._arrived.notify_all()
        except ConnectionClosed as exc:
            self.closed = f"the gateway closed the connection ({exc})"
        finally:
            self.closed = self.closed or "the gateway closed the connection"
            async with self._arrived:
                self._arrived.notify_all()

    async def next_frames(self, seen: int, timeout_s: float) -> list[dict[str, Any]]:
        """Frames after the first `seen`, waiting up to `timeout_s` for at least one."""
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.frames) > seen or self.closed),
                                       timeout_s)
            except TimeoutError:
                pass
            return self.frames[seen:]

    async def subscribe(self, step: str, channels: list[str], timeout_s: float = 15.0) -> None:
        """Subscribe, retrying channels refused as `forbidden` (the gateway learns an upload's
        uploader from VideoUploaded a moment after the API acknowledged it) until `timeout_s`."""
        pending, deadline = list(channels), time.monotonic() + timeout_s
        while pending:
            seen = len(self.frames)
            await self.socket.send(json.dumps({"op": "subscribe", "channels": pending,
                                               "since": {channel: 0 for channel in pending if channel != "feed"}}))
            answered: dict[str, dict[str, Any]] = {}
            while len(answered) < len(pending) and time.monotonic() < deadline and not self.closed:
                for frame in (await self.next_frames(seen, 1.0)):
                    seen += 1
                    if frame.get("type") in ("subscribed", "error") and frame.get("channel") in pending:
                        answered[frame["channel"]] = frame
            if self.closed:
                raise DemoFailed(step, self.closed)
            refused = [ch for ch, frame in answered.items() if frame["type"] == "error"]
            if any(answered[ch].get("code") != "forbidden" for ch in refused) or time.monotonic() >= deadline:
                detail = "; ".join(f"{ch}: {answered[ch].get('code')} {answered[ch].get('message')}" for ch in refused)
                raise DemoFailed(step, f"the gateway refused {detail or ', '.join(pending)}")
            pending = refused
            if pending:
                await asyncio.sleep(SUBSCRIBE_RETRY_S)

    async def close(self) -> None:
        await self.socket.close()
        self._reader.cancel()


def _check_stack(settings: Settings, options: DemoOptions) -> list[str]:
    """Names of what does not answer: the given API and gateway, and every other component."""
    from lustrax.stack import probe_components

    readyz = f"{options.api_url}/readyz"
    deadline = time.monotonic() + STACK_WAIT_S
    # Just after `lustrax up` the API's catalog may still be replaying the topics (503): wait for it.
    while (status := _status(readyz)) == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
    down = [] if status == 200 else [f"ingest API ({readyz}: {status or 'no answer'})"]
    if _status(http_of(options.gateway_url, "/healthz")) != 200:
        down.append(f"gateway ({options.gateway_url})")
    for name, (ok, detail) in probe_components(settings).items():
        if not ok and name in NEEDED_COMPONENTS:
            down.append(f"{name} ({detail})")
    return down


async def _pass_age_gate(api_url: str) -> str:
    """The demo's viewer declares being 18 or older (POST /v1/age-gate): the gateway's feed and
    video channels need the age token (docs/trust-and-safety.md)."""
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            answer = await client.post(f"{api_url}/v1/age-gate",
                                       json={"method": "self_declaration", "confirm_over_18": True})
        except httpx.HTTPError as exc:
            raise DemoFailed("stack", f"the age gate did not answer: {exc}") from None
    if answer.status_code != 200:
        raise DemoFailed("stack", f"the age gate refused the demo ({answer.status_code}: {answer.text[:200]})")
    return str(answer.json()["age_token"])


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


async def run_demo(settings: Settings, options: DemoOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run every step; what was shown (the published frame, the like_update frames, the trending
    rows) is also returned. Raises DemoFailed naming the step."""
    display = Display(out)
    began = time.monotonic()
    down = await asyncio.to_thread(_check_stack, settings, options)
    if down:
        raise DemoFailed("stack", "not answering: " + "; ".join(down) + " (start the stack with `lustrax up`)")
    display.step("stack", f"every component answers (API {options.api_url}, gateway {options.gateway_url})")

    with tempfile.TemporaryDirectory(prefix="lustrax-demo-") as workdir:
        clip = Path(workdir) / "demo.mp4"
        await asyncio.to_thread(_make_clip, clip, options.clip_s)
        display.step("clip", f"{clip.stat().st_size:,} bytes: {options.clip_s} s of 720p test pattern with a tone")
        token = issue_token(settings.jwt_signing_secret, DEMO_USER, (), 3600)
        gateway = await GatewayClient.open(options.gateway_url, token, await _pass_age_gate(options.api_url))
        try:
            await gateway.subscribe("stack", ["feed"])
            async with AsyncIngestClient(options.api_url, token) as api:
                video_id = await _upload(api, clip, display)
                follower = await _follow(gateway, video_id, options.timeout_s, display)
                published = follower.published or {}
                await _check_playlist(str(published.get("video_url")), display)
                await gateway.subscribe("like_update", [f"video:{video_id}"])
                await _traffic(settings, options, api, video_id, display)
            likes = await _wait_like_update(gateway, video_id, options.wait_s, display)
        finally:
            await gateway.close()
    trending = await _trending(settings, video_id, options.wait_s, display)

    print("\nFrames the WebSocket client received:", file=out)
    for frame in gateway.frames:
        if frame.get("type") in ("new_video", "like_update"):
            print(f"  {frame['type']:<12} {frame.get('channel'):<44} seq {frame.get('seq')}  "
                  f"{json.dumps(frame.get('data'))}", file=out)
    print(f"\nDone in {time.monotonic() - began:.0f} s. Open the page: {options.api_url}/#video={video_id}\n"
          f"Master playlist: {published.get('video_url')}\n"
          f"Live page without a video chosen: {options.api_url}/", file=out, flush=True)
    return {"video_id": video_id, "published": published, "like_updates": likes, "trending": trending}


def _make_clip(dest: Path, seconds: int) -> None:
    from processors.transcode.ffmpeg.binary import ffmpeg_binary

    try:
        subprocess.run(clip_command(ffmpeg_binary(), dest, seconds), check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        raise DemoFailed("clip", f"ffmpeg could not make the clip: {exc} {stderr.decode(errors='replace')[-300:]}") \
            from None


async def _upload(api: AsyncIngestClient, clip: Path, display: Display) -> str:
    try:
        ticket = await api.create_upload(f"LustraX demo {time.strftime('%H:%M:%S')}", "video/mp4",
                                         clip.stat().st_size, tags=["demo"])
        await api.put_upload(ticket, clip)
        await api.complete_upload(ticket.video_id)
    except IngestClientError as exc:
        raise DemoFailed("upload", str(exc)) from None
    display.step("upload", f"video {ticket.video_id}: created, PUT to the presigned URL, completed")
    return ticket.video_id


async def _follow(gateway: GatewayClient, video_id: str, timeout_s: float, display: Display) -> UploadFollower:
    """Upload -> published, from the frames of upload:{id} and feed, with a live progress bar."""
    await gateway.subscribe("transcode", [f"upload:{video_id}"])
    follower = UploadFollower(video_id)
    began = time.monotonic()
    step_began, seen, step = began, 0, follower.step
    while follower.published is None:
        elapsed = time.monotonic() - began
        if elapsed > timeout_s:
            raise DemoFailed(follower.step, f"no progress of {video_id} within {timeout_s:.0f} s "
                             f"(is the {follower.step} worker running? `lustrax status`)")
        frames = await gateway.next_frames(seen, 0.5)
        seen += len(frames)
        for frame in frames:
            follower.feed(frame)
        if gateway.closed and follower.published is None:
            raise DemoFailed(follower.step, gateway.closed)
        for note in follower.notes:
            display.info(note)
        follower.notes.clear()
        if step == "transcode":
            display.progress("transcoding", follower.percent, time.monotonic() - step_began)
        if follower.step != step:
            texts = {"transcode": f"the HLS ladder is in private staging ({time.monotonic() - step_began:.1f} s)",
                     "moderation": f"{follower.decision or 'approved'} by the moderation worker ({time.monotonic() - step_began:.1f} s)",
                     "publish": f"new_video on feed: {(follower.published or {}).get('title')!r}"}
            for done in STEPS[STEPS.index(step):STEPS.index("publish") + 1]:
                if done == follower.step:
                    break
                display.step(done, texts[done])
            step_began, step = time.monotonic(), follower.step
    return follower


async def _check_playlist(url: str, display: Display) -> None:
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(url)
    except httpx.HTTPError as exc:
        raise DemoFailed("playlist", f"{url}: {exc}") from None
    if answer.status_code != 200 or not answer.text.startswith("#EXTM3U"):
        raise DemoFailed("playlist", f"{url} answered {answer.status_code}, not a playlist")
    variants = sum(1 for line in answer.text.splitlines() if line.startswith("#EXT-X-STREAM-INF"))
    display.step("playlist", f"{url} answers anonymously ({variants} renditions)")


async def _traffic(settings: Settings, options: DemoOptions, api: AsyncIngestClient, video_id: str,
                   display: Display) -> None:
    try:
        # The uploader likes their own video first: a like the heat worker surely broadcasts.
        await api.send_event({"type": "like", "video_id": video_id, "user_id": DEMO_USER})
    except IngestClientError as exc:
        raise DemoFailed("simulate", f"the like was refused: {exc}") from None
    service = issue_token(settings.jwt_signing_secret, "simulator", ("service",), int(options.simulate_s) + 3600)
    display.step("simulate", f"{options.rate:g} events/s for {options.simulate_s:g} s, {video_id} the most watched")
    try:
        report = await simulate(options.api_url, service, options.rate, options.simulate_s, users=200, videos=20,
                                seed=int(time.time()), progress=sys.stderr.isatty(), video_ids=[video_id])
    except IngestClientError as exc:
        raise DemoFailed("simulate", str(exc)) from None
    display.info(f"sent {report.sent:,} events ({report.achieved_rate:.0f}/s), failed {report.failed}: "
                 + ", ".join(f"{kind} {count}" for kind, count in sorted(report.by_type.items())))
    if report.sent == 0 or report.failed:
        raise DemoFailed("simulate", f"{report.failed} events failed: {report.last_error}")


async def _wait_like_update(gateway: GatewayClient, video_id: str, wait_s: float,
                            display: Display) -> list[dict[str, Any]]:
    def likes() -> list[dict[str, Any]]:
        return [f for f in gateway.frames if f.get("type") == "like_update" and f.get("channel") == f"video:{video_id}"]

    deadline = time.monotonic() + wait_s
    while not likes() and time.monotonic() < deadline and not gateway.closed:
        await gateway.next_frames(len(gateway.frames), 0.5)
    if not likes():
        raise DemoFailed("like_update", f"no like_update on video:{video_id} within {wait_s:.0f} s after the "
                         "traffic (is the heat worker running? `lustrax status`)")
    last = likes()[-1]["data"]
    display.step("like_update", f"{len(likes())} frame(s) on video:{video_id}; like_count {last['like_count']}")
    return likes()


async def _trending(settings: Settings, video_id: str, wait_s: float, display: Display) -> list[dict[str, Any]]:
    """trending_now over the last hour, until the demo video is in it (the sink stores in batches)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            columns, rows = await asyncio.to_thread(run_sql, settings, query_file("trending_now"),
                                                    {"minutes": "60", "limit": "10"}, False)
        except LustraxError as exc:
            raise DemoFailed("trending", str(exc)) from None
        if any(row[0] == video_id for row in rows) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    if not any(row[0] == video_id for row in rows):
        raise DemoFailed("trending", f"{video_id} is not in trending_now within {wait_s:.0f} s (is the sink running?)")
    display.step("trending", "infra/clickhouse/queries/trending_now.sql, last 60 minutes, from ClickHouse:")
    print(format_table(columns, rows), file=display.out, flush=True)
    return [dict(zip(columns, row)) for row in rows]


def demo_options(settings: Settings, api_url: str | None, gateway_url: str | None, simulate_s: float, rate: float,
                 timeout_s: float, wait_s: float, clip_s: int = CLIP_SECONDS) -> DemoOptions:
    return DemoOptions((api_url or settings.ingest_url).rstrip("/"), gateway_url or settings.gateway_url,
                       simulate_s, rate, timeout_s, wait_s, clip_s)


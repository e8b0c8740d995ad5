"""The page's pure parts (its policy, its template, the edge's CORS) and the demo's (the clip
command, following an upload's frames to its publication, naming the step that failed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import load_settings
from infra.edge.server import cors_headers
from lustrax.demo import DemoFailed, UploadFollower, clip_command, http_of
from producers.routers.page import content_security_policy, render_page
from producers.simulate import TrafficModel

VIDEO = "abc123"


def _frame(kind: str, video_id: str = VIDEO, **data: object) -> dict[str, object]:
    return {"type": kind, "channel": f"upload:{video_id}", "seq": 1, "data": {"video_id": video_id, **data}}


def test_the_policy_allows_this_origin_the_gateway_and_the_cdn_only() -> None:
    settings = load_settings(ws_port=9999, edge_port=7777, ingest_port=8181)
    policy = dict(part.split(" ", 1) for part in content_security_policy(settings).split("; "))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self' ws://127.0.0.1:9999/v1/ws http://127.0.0.1:7777/"
    assert policy["media-src"] == "'self' blob: http://127.0.0.1:7777/"  # blob: is hls.js's MediaSource
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe" not in content_security_policy(settings)


def test_the_gateway_url_is_escaped_into_the_page() -> None:
    settings = load_settings(page_gateway_url='wss://ws.example.com/v1/ws"><script>alert(1)</script>')
    page = render_page(settings)
    assert "<script>alert(1)" not in page and "&quot;&gt;&lt;script&gt;" in page


def test_the_page_origins_follow_the_ingest_address() -> None:
    settings = load_settings(ingest_port=8181)
    assert settings.page_origins == ["http://127.0.0.1:8181", "http://localhost:8181"]
    assert settings.ws_origins == settings.edge_origins == settings.page_origins
    given = load_settings(ws_allowed_origins="https://a.example, https://b.example", edge_allowed_origins="")
    assert given.ws_origins == ["https://a.example", "https://b.example"] and given.edge_origins == []


def test_cors_only_for_allowed_origins() -> None:
    allowed = frozenset({"http://127.0.0.1:8080"})
    ours = cors_headers("http://127.0.0.1:8080", allowed)
    assert ours["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080" and ours["Vary"] == "Origin"
    assert ours["Access-Control-Allow-Credentials"] == "true"
    assert "Range" in cors_headers("http://127.0.0.1:8080", allowed, preflight=True)["Access-Control-Allow-Headers"]
    for other in ("http://evil.example", "null", None, "http://127.0.0.1:8080.evil.example"):
        assert cors_headers(other, allowed) == {"Vary": "Origin"}, other


def test_the_clip_is_a_generated_test_pattern() -> None:
    argv = clip_command("ffmpeg", Path("/tmp/x.mp4"), 6)
    assert "testsrc2=size=1280x720:rate=25:duration=6" in argv and argv[-1] == "/tmp/x.mp4"
    assert http_of("ws://127.0.0.1:8765/v1/ws", "/healthz") == "http://127.0.0.1:8765/healthz"
    assert http_of("wss://ws.example.com/v1/ws", "/healthz") == "https://ws.example.com/healthz"


def test_an_upload_is_followed_to_its_publication() -> None:
    follower = UploadFollower(VIDEO)
    follower.feed(_frame("transcode_progress", percent=40.0))
    follower.feed(_frame("transcode_progress", "someone-else", percent=90.0))  # another video: ignored
    assert (follower.step, follower.percent) == ("transcode", 40.0)
    follower.feed(_frame("transcode_failed", reason="killed", retryable=True, attempt=1))
    assert follower.step == "transcode" and "retrying" in follower.notes[0]
    follower.feed(_frame("transcoded", duration_ms=6000, renditions=[]))
    assert (follower.step, follower.percent) == ("moderation", 100.0)
    follower.feed(_frame("moderation", decision="approved", reason=None))
    assert follower.step == "publish"
    follower.feed({"type": "new_video", "channel": "feed", "seq": 9, "data": {"video_id": VIDEO, "title": "t"}})
    assert follower.step == "published" and follower.published == {"video_id": VIDEO, "title": "t"}


@pytest.mark.parametrize(("frame", "step", "words"), [
    (_frame("transcode_failed", reason="not a video", retryable=False, attempt=4), "transcode", "gave up"),
    (_frame("moderation", decision="rejected", reason="Graphic Violence 91%"), "moderation", "was rejected"),
    (_frame("moderation", decision="needs_review", reason=None), "moderation", "was sent to human review"),
])
def test_a_frame_that_ends_the_upload_names_the_step(frame: dict[str, object], step: str, words: str) -> None:
    with pytest.raises(DemoFailed) as failed:
        UploadFollower(VIDEO).feed(frame)
    assert failed.value.step == step and words in str(failed.value)
    assert str(failed.value).startswith(f"demo failed at step '{step}'")


def test_given_videos_take_the_most_popular_ranks() -> None:
    model = TrafficModel(1, 20, 10, video_ids=["real-video"], start_ms=0)
    assert model.video_ids[0] == "real-video" and model.video_ids[1] == "sim-video-00001" and len(model.video_ids) == 10
    plain = TrafficModel(1, 20, 10, start_ms=0)
    # Only the name changes: the stream is the same otherwise.
    renamed = [{**e, "video_id": e["video_id"].replace("real-video", "sim-video-00000")} for e in model.events_until(60_000)]
    assert renamed == plain.events_until(60_000) and any(e["video_id"] == "real-video" for e in model.events_until(120_000))

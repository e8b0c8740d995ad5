"""The page at GET / in a real browser, and `lustrax demo`, on the real pipeline.

Every service of the stack runs as its own process (ingest API, edge, transcode and moderation
workers, heat worker, gateway) except the ClickHouse sink, which runs here with its query endpoint
because this process holds the run's chDB directory. Debian's chromium (`make setup` installs it)
is driven by Playwright with the system browser as its executable: it opens the page, then
`lustrax demo` runs as the CLI does, and the page must receive the demo's new_video frame and play
that video through hls.js from the edge (currentTime advances, no error).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.process import free_port
from common.settings import Settings
from lustrax.cli import main
from lustrax.services import settings_env
from processors.sink.query_server import start_query_server
from processors.sink.service import sink_health
from producers.routers.page import HLS_JS
from tests.helpers import age_headers, age_token, running_services

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
DEMO_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def pipeline(stack: Settings, sink: Any) -> Iterator[tuple[Settings, dict[str, Any]]]:
    """Settings of the whole running pipeline, and its service processes by name."""
    settings = stack.model_copy(update={
        "ingest_port": free_port(), "edge_port": free_port(), "transcode_web_port": free_port(),
        "moderation_web_port": free_port(), "heat_web_port": free_port(), "ws_port": free_port(),
        "sink_query_port": free_port(), "transcode_preset": "ultrafast", "moderation_sample_interval_s": 1.0,
        "heat_emit_interval_s": 2.0})
    server = start_query_server("127.0.0.1", settings.sink_query_port, settings, lambda: sink_health(sink))
    ports = {"ingest": settings.ingest_port, "edge": settings.edge_port, "transcode": settings.transcode_web_port,
             "moderation": settings.moderation_web_port, "heat": settings.heat_web_port, "gateway": settings.ws_port}
    try:
        with running_services([(settings, name, port) for name, port in ports.items()]) as services:
            yield settings, dict(zip(ports, services))
    finally:
        server.shutdown()


def _wait_for(page: Any, expression: str, timeout_s: float) -> None:
    """Poll a JS expression with page.evaluate (CDP's evaluation): the page's CSP forbids the
    in-page eval that Playwright's wait_for_function uses."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"not true within {timeout_s} s: {expression}"
        time.sleep(0.2)


def _demo(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.Popen([sys.executable, "-m", "lustrax.cli", "demo", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_the_page_shows_a_fresh_upload_and_plays_it_and_the_demo_shows_the_flow(pipeline: Any) -> None:
    from playwright.sync_api import sync_playwright

    settings, _ = pipeline
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make setup` installs it"
    assert HLS_JS.exists(), "hls.js is not in producers/static/vendor: `make setup` copies it from npm"
    page_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--headless"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("console", lambda m: page_errors.append(m.text) if "Content Security Policy" in m.text else None)
            loaded: list[str] = []
            page.on("request", lambda request: loaded.append(request.url))
            page.on("websocket", lambda socket: loaded.append(socket.url))
            page.goto(f"{settings.ingest_url}/")
            # The age gate first: nothing of the catalog, trending, the gateway or the CDN before it passes.
            page.wait_for_selector("#age-gate-confirm", state="visible", timeout=10_000)
            assert page.is_hidden("#content") and page.locator("#feed li, #trending li").count() == 0
            assert [url for url in loaded if "/v1/" in url or url.startswith("ws")
                    or url.startswith(settings.public_base_url)] == [], loaded
            page.click("#age-gate-confirm")
            _wait_for(page, "document.getElementById('status').dataset.state === 'live'", 20)
            assert any(url.endswith("/v1/age-gate") for url in loaded) and page.is_hidden("#age-gate")

            demo = _demo(settings, "--clip-seconds", "3", "--simulate-seconds", "4", "--rate", "60", "--wait", "45")
            try:
                page.wait_for_selector("#frames li[data-type='new_video']", timeout=DEMO_TIMEOUT_S * 1000)
                video_id = page.get_attribute("#frames li[data-type='new_video']", "data-video-id")
                assert video_id
                page.click(f"#feed li[data-video-id='{video_id}'] button")
                _wait_for(page, "document.getElementById('player').currentTime > 1.5", 30)
                player = page.evaluate("""() => { const v = document.getElementById('player');
                    return {time: v.currentTime, error: v.error && v.error.code, id: v.dataset.videoId,
                            status: document.getElementById('player-status').dataset.state}; }""")
                assert player["error"] is None and player["id"] == video_id, player
                assert player["status"] in ("playing", "ended"), player  # a 3 s clip may be over already
                out, err = demo.communicate(timeout=DEMO_TIMEOUT_S)
            finally:
                if demo.poll() is None:
                    demo.kill()
                    demo.communicate()
            print(out)
            assert demo.returncode == 0, f"{out}\n{err}"
            # The trending list on the page comes from ClickHouse through GET /v1/trending.
            page.wait_for_selector(f"#trending li[data-video-id='{video_id}']", timeout=20_000)
        finally:
            browser.close()
    assert page_errors == []

    for step in ("stack", "clip", "upload", "transcode", "moderation", "publish", "playlist", "simulate",
                 "like_update", "trending"):
        assert re.search(rf"^\[\s*\d+/10\] {step}\b", out, re.M), f"step {step} is not shown:\n{out}"
    assert re.search(r"transcoding \[#+\] 100\.0 %", out)  # the live progress from upload:{id}
    assert re.search(rf"^{video_id}\s+\d+", out, re.M), "the demo video is in the trending table"
    assert re.search(rf"^  new_video\s+feed\s+seq \d+\s+.*\"{video_id}\"", out, re.M)
    assert re.search(rf"^  like_update\s+video:{video_id}\s+seq \d+", out, re.M)
    master = f"{settings.public_base_url}/videos/{video_id}/master.m3u8"
    assert f"Open the page: {settings.ingest_url}/#video={video_id}" in out and f"Master playlist: {master}" in out


def test_the_page_is_served_with_a_strict_policy_and_documented(pipeline: Any) -> None:
    settings, _ = pipeline
    with httpx.Client(base_url=settings.ingest_url, timeout=10) as api:
        page = api.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe" not in policy and "default-src 'none'" in policy
        assert f"connect-src 'self' {settings.gateway_url} {settings.public_base_url}/" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        # No inline script or style: every script has a src, and there is no style element or attribute.
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page.text) == []
        assert "<style" not in page.text and "style=" not in page.text
        assert f'content="{settings.gateway_url}"' in page.text
        for asset in ("/static/page.js", "/static/vendor/hls.min.js", "/static/page.css"):
            got = api.get(asset)
            assert got.status_code == 200 and got.headers["x-content-type-options"] == "nosniff", asset
        assert api.get("/static/../routers/page.py").status_code == 404
        assert api.get("/static/nothing.js").json()["error"]["code"] == "not_found"

        document = api.get("/openapi.json").json()
        root = document["paths"]["/"]["get"]
        assert "text/html" in root["responses"]["200"]["content"] and root["security"] == []
        assert document["paths"]["/v1/trending"]["get"]["security"] == [{"age_token": []}]  # adult content

        assert api.get("/v1/trending").json()["error"]["code"] == "age_verification_required"
        for bad, field in (("limit=0", "limit"), ("limit=51", "limit"), ("minutes=99999", "minutes")):
            error = api.get(f"/v1/trending?{bad}", headers=age_headers(settings))
            assert error.status_code == 422 and error.json()["error"]["field"] == field, bad


def test_trending_lists_published_videos_only(pipeline: Any) -> None:
    settings, _ = pipeline
    adult = age_headers(settings)
    body = httpx.get(f"{settings.ingest_url}/v1/trending?minutes=60&limit=50", headers=adult, timeout=10).json()
    assert body["items"], "the demo's video is trending"
    for item in body["items"]:
        video = httpx.get(f"{settings.ingest_url}/v1/videos/{item['video_id']}", headers=adult, timeout=10).json()
        assert video["state"] == "published" and item["video_url"] == video["video_url"]
    # Most viewed first; other tests' published videos may have only likes in the window (0 views).
    views = [item["views"] for item in body["items"]]
    assert views == sorted(views, reverse=True) and views[0] > 0
    assert not any(item["video_id"].startswith("sim-video-") for item in body["items"])  # events only, no video


def test_the_demo_names_the_step_that_fails(pipeline: Any, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI in this process (the first test ran it as a process already): exit 1 and one line."""
    settings, services = pipeline
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    nothing = f"http://127.0.0.1:{free_port()}"
    assert main(["demo", "--url", nothing]) == 1
    err = capsys.readouterr().err
    assert "demo failed at step 'stack'" in err and f"ingest API ({nothing}/readyz: no answer)" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err

    services["heat"].process.stop()  # a stopped component
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "demo failed at step 'stack'" in err and f"heat (http://127.0.0.1:{settings.heat_web_port})" in err, err
    assert "`lustrax up`" in err


def test_the_page_refuses_what_it_should(pipeline: Any) -> None:
    """What an attacker could try on the page's endpoints: other origins on the gateway and the edge."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    settings, _ = pipeline
    past_the_gate = f"{settings.gateway_url}?age_token={age_token(settings)}"
    with pytest.raises(InvalidStatus) as refused:
        connect(past_the_gate, origin="http://evil.example").close()  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:  # the page's origin, but not past the age gate
        connect(settings.gateway_url, origin=settings.page_origins[0]).close()  # type: ignore[arg-type]
    assert refused.value.response.status_code == 401
    with connect(past_the_gate, origin=settings.page_origins[0]) as socket:  # type: ignore[arg-type]
        socket.send(json.dumps({"op": "subscribe", "channels": ["feed", "video:x"]}))
        answers = [json.loads(socket.recv(timeout=10)) for _ in range(2)]
    # Anonymous: the feed only.
    assert {a["type"] for a in answers} == {"subscribed", "error"}
    assert next(a for a in answers if a["type"] == "error")["code"] == "unauthenticated"
    trending = httpx.get(f"{settings.ingest_url}/v1/trending", headers=age_headers(settings), timeout=10)
    playlist = next(iter(trending.json()["items"]))["video_url"]
    evil = httpx.get(playlist, headers={"Origin": "http://evil.example"}, timeout=10)
    assert evil.status_code == 200 and "access-control-allow-origin" not in evil.headers
    ours = httpx.get(playlist, headers={"Origin": settings.page_origins[0]}, timeout=10)
    assert ours.headers["access-control-allow-origin"] == settings.page_origins[0]
    assert ours.headers["vary"] == "Origin"
    # The preflight of a Range request (hls.js with byte ranges), ours and another origin's.
    for origin, allowed in ((settings.page_origins[0], True), ("http://evil.example", False)):
        preflight = httpx.request("OPTIONS", playlist, timeout=10, headers={
            "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"})
        assert preflight.status_code == 204 and preflight.content == b""
        assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed
        assert ("Range" in preflight.headers.get("access-control-allow-headers", "")) is allowed
    assert httpx.put(playlist, content=b"x", headers={"Origin": settings.page_origins[0]}).status_code == 405

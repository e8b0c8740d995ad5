"""Premium playback end to end: objects in the real public bucket, the edge in front of it over
real HTTP, cookies from POST /v1/videos/{id}/playback on the real ingest API."""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from common.settings import Settings
from common.tokens import issue_token
from infra.edge.server import create_edge_app
from infra.s3.buckets import s3_client
from infra.s3.layout import public_prefix
from producers.app import create_app
from producers.playback import PlaybackSigner
from tests.helpers import age_headers, served
from tests.integration.test_catalog_api import produce
from tests.lifecycle import Video

pytestmark = pytest.mark.integration

PLAYLIST = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n720p/index.m3u8\n"
SEGMENT = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture(scope="module")
def delivery(stack: Settings) -> Iterator[tuple[Settings, str, str]]:
    """(settings whose CDN base is the edge, edge URL, API URL)."""
    with served(create_edge_app(stack)) as edge_url:
        settings = stack.model_copy(update={"cdn_base": edge_url})
        with served(create_app(settings)) as api_url:
            yield settings, edge_url, api_url


@pytest.fixture(scope="module")
def videos(stack: Settings, delivery: tuple[Settings, str, str]) -> dict[str, str]:
    """A published free video, two published premium videos and one that was never published: the
    ladders in the public bucket and their lifecycle events, as the moderation worker leaves them."""
    s3 = s3_client(stack)
    lives = {name: Video(premium=name != "free") for name in ("free", "premium", "other_premium", "unpublished")}
    ids = {name: video.video_id for name, video in lives.items()}
    events = [lives["unpublished"].uploaded()]
    for name, premium in (("free", False), ("premium", True), ("other_premium", True)):
        events += [lives[name].uploaded(), lives[name].published()]
        prefix = public_prefix(ids[name], premium)
        s3.put_object(Bucket=stack.s3_public_bucket, Key=f"{prefix}720p/seg_00001.ts", Body=SEGMENT,
                      ContentType="video/mp2t", CacheControl="public, max-age=31536000, immutable")
        s3.put_object(Bucket=stack.s3_public_bucket, Key=f"{prefix}master.m3u8", Body=PLAYLIST,
                      ContentType="application/vnd.apple.mpegurl", CacheControl="public, max-age=60")
    produce(stack, events)
    api_url, deadline = delivery[2], time.monotonic() + 30
    while any(httpx.get(f"{api_url}/v1/videos/{ids[name]}", headers=age_headers(stack)).status_code != 200
              for name in ("free", "premium", "other_premium")):  # the API's catalog has folded them
        assert time.monotonic() < deadline, "the catalog did not show the published videos"
        time.sleep(0.2)
    return ids


def _token(stack: Settings, *roles: str, premium: bool = False) -> dict[str, str]:
    """A viewer's token, past the age gate (playback needs both: tests/integration/test_age_gate.py)."""
    token = issue_token(stack.jwt_signing_secret, f"viewer-{uuid.uuid4().hex[:8]}", roles, premium=premium)
    return age_headers(stack, Authorization=f"Bearer {token}")


def _cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


def _raw_status(base_url: str, path: str) -> int:
    """GET with the path sent as written (httpx would resolve `..` before sending)."""
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def _play(api_url: str, video_id: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{api_url}/v1/videos/{video_id}/playback", headers=headers, timeout=10)


def test_a_free_video_is_anonymous_through_the_edge(delivery, videos, stack: Settings) -> None:
    settings, edge_url, api_url = delivery
    answer = _play(api_url, videos["free"], _token(stack))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["video_url"] == f"{edge_url}/videos/{videos['free']}/master.m3u8"
    assert "cookies" not in body and "set-cookie" not in answer.headers
    got = httpx.get(body["video_url"])
    assert (got.status_code, got.content) == (200, PLAYLIST)
    assert got.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert got.headers["cache-control"] == "public, max-age=60" and got.headers["etag"]
    head = httpx.head(body["video_url"])
    assert head.status_code == 200 and head.headers["content-length"] == str(len(PLAYLIST))


def test_the_edge_never_lists_nor_forwards_odd_paths(delivery, videos) -> None:
    _, edge_url, _ = delivery
    for path in ("/", "/videos/", f"/videos/{videos['free']}/", "/?list-type=2", "/videos/../premium/x",
                 f"/videos/{videos['free']}/%2e%2e/master.m3u8", f"/videos/{videos['free']}/absent.ts"):
        assert _raw_status(edge_url, path) == 404, path
    assert httpx.put(f"{edge_url}/videos/{videos['free']}/master.m3u8", content=b"evil").status_code == 405


def test_a_premium_video_is_403_without_cookies(delivery, videos) -> None:
    _, edge_url, _ = delivery
    for name in ("master.m3u8", "720p/seg_00001.ts", "absent.ts"):
        assert httpx.get(f"{edge_url}/premium/videos/{videos['premium']}/{name}").status_code == 403
    assert httpx.head(f"{edge_url}/premium/videos/{videos['premium']}/master.m3u8").status_code == 403


def test_premium_plays_with_the_cookies_from_playback_ranges_included(delivery, videos, stack: Settings) -> None:
    _, edge_url, api_url = delivery
    answer = _play(api_url, videos["premium"], _token(stack, "premium"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["video_url"] == f"{edge_url}/premium/videos/{videos['premium']}/master.m3u8"
    assert set(body["cookies"]) == {"CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id"}
    assert abs(time.time() + stack.playback_ttl_s
               - time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) + time.timezone) < 10
    assert answer.headers["cache-control"] == "no-store"
    set_cookies = answer.headers.get_list("set-cookie")
    assert len(set_cookies) == 3
    for line in set_cookies:
        attributes = {part.strip().split("=")[0].lower() for part in line.split(";")}
        assert {"secure", "httponly", "path", "max-age"} <= attributes
        assert f"Path=/premium/videos/{videos['premium']}/" in line
    cookies = _cookie_header(body["cookies"])
    got = httpx.get(body["video_url"], headers=cookies)
    assert (got.status_code, got.content) == (200, PLAYLIST)
    segment = f"{edge_url}/premium/videos/{videos['premium']}/720p/seg_00001.ts"
    ranged = httpx.get(segment, headers={**cookies, "Range": "bytes=100-299"})
    assert ranged.status_code == 206 and ranged.content == SEGMENT[100:300]
    assert ranged.headers["content-range"] == f"bytes 100-299/{len(SEGMENT)}"
    assert httpx.head(segment, headers=cookies).status_code == 200


def test_the_premium_claim_is_entitled_and_others_are_not(delivery, videos, stack: Settings) -> None:
    _, _, api_url = delivery
    assert _play(api_url, videos["premium"], _token(stack, premium=True)).status_code == 200
    refused = _play(api_url, videos["premium"], _token(stack))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_entitled"
    assert "set-cookie" not in refused.headers


def test_another_videos_cookies_and_expired_cookies_are_403(delivery, videos, stack: Settings) -> None:
    settings, edge_url, api_url = delivery
    other = _play(api_url, videos["other_premium"], _token(stack, "premium")).json()["cookies"]
    url = f"{edge_url}/premium/videos/{videos['premium']}/master.m3u8"
    assert httpx.get(url, headers=_cookie_header(other)).status_code == 403
    # Genuinely signed by the API's key, but their time is up.
    from common.tokens import Principal

    expired = PlaybackSigner(settings).grant(Principal("u", frozenset({"premium"})), videos["premium"],
                                             (True, True), time.time() - settings.playback_ttl_s - 5)
    assert expired.cookies is not None
    refused = httpx.get(url, headers=_cookie_header(expired.cookies))
    assert refused.status_code == 403 and "expired" in refused.text


def test_unpublished_unknown_and_anonymous_requests_are_refused(delivery, videos, stack: Settings) -> None:
    _, _, api_url = delivery
    for video_id in (videos["unpublished"], "not-a-video-id"):
        missing = _play(api_url, video_id, _token(stack, "premium"))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert _play(api_url, videos["free"], {}).status_code == 401

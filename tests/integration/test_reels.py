"""GET /v1/reels on the real pipeline: the recs worker (its own process, holding Milvus Lite), the
ingest API (its own process), the sink here (this process holds the run's chDB directory).

Two planted tastes of four videos each, watched by users who finish videos of their taste and drop
the others; a user who finished two videos of taste A gets the unseen ones of A, and a new video
of A nobody watched yet (cold start from its tag and uploader), ranked above every video of B;
never a finished or an unpublished one. A tick finishing one more drops it from the reels without
a training; Milvus Lite keeps everything across a restart of the worker.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from common.process import free_port
from common.settings import Settings
from lustrax.cli import main
from lustrax.recs import train_now
from lustrax.services import settings_env
from processors.sink.query_server import start_query_server
from processors.sink.service import sink_health
from tests.helpers import age_headers, running_services
from tests.integration.test_catalog_api import bearer, produce
from tests.lifecycle import Video

pytestmark = pytest.mark.integration
DURATION_MS = 60_000


class Planted:
    def __init__(self) -> None:
        self.a = [Video(uploader_id="up-a", title=f"A{i}", tags=("taste-a",)) for i in range(4)]
        self.b = [Video(uploader_id="up-b", title=f"B{i}", tags=("taste-b",)) for i in range(4)]
        self.new_a = Video(uploader_id="up-a", title="A new", tags=("taste-a",))  # published, never watched
        self.hidden_a = Video(uploader_id="up-a", title="A hidden", tags=("taste-a",))  # watched, not published
        self.user = f"alice-{os.getpid()}"


def tick(video: Video, user: str, fraction: float) -> dict[str, Any]:
    return {"type": "watch_tick", "video_id": video.video_id, "user_id": user, "session_id": f"{user}-{video.video_id}",
            "position_ms": int(DURATION_MS * fraction), "duration_ms": DURATION_MS}


@pytest.fixture(scope="module")
def reels_stack(stack: Settings, sink: Any, clickhouse: Any) -> Iterator[tuple[Settings, Planted, list[Any]]]:
    settings = stack.model_copy(update={"ingest_port": free_port(), "recs_web_port": free_port(),
                                        "recs_milvus_port": free_port(), "sink_query_port": free_port(),
                                        "recs_cache_s": 0.5})
    planted = Planted()
    events = [e for v in [*planted.a, *planted.b, planted.new_a] for e in v.through("published")]
    produce(settings, events + planted.hidden_a.through("transcoded"))
    server = start_query_server("127.0.0.1", settings.sink_query_port, settings, lambda: sink_health(sink))
    try:
        with running_services([(settings, "ingest", settings.ingest_port),
                               (settings, "recs", settings.recs_web_port)]) as services:
            ticks = []
            for taste, other in ((planted.a + [planted.hidden_a], planted.b), (planted.b, planted.a)):
                for u in range(6):
                    user = f"fan-{taste[0].title}-{u}-{os.getpid()}"
                    ticks += [tick(taste[(u + k) % 4], user, 1.0) for k in range(3)]
                    ticks += [tick(planted.hidden_a, user, 1.0)] if planted.hidden_a in taste else []
                    ticks.append(tick(other[u % 4], user, 0.2))
            ticks += [tick(planted.a[0], planted.user, 1.0), tick(planted.a[1], planted.user, 0.95),
                      tick(planted.b[0], planted.user, 0.3)]
            service = bearer(settings, "simulator", "service")
            answer = httpx.post(f"{settings.ingest_url}/v1/events/batch", json={"events": ticks}, headers=service,
                                timeout=30)
            assert answer.status_code == 202, answer.text
            # The sink stores the ticks within a second or so; train once ClickHouse has all of ours.
            users = sorted({t["user_id"] for t in ticks})
            deadline = time.monotonic() + 30
            while clickhouse.query(f"SELECT count() FROM `{settings.clickhouse_database}`.watch_ticks "
                                   "WHERE has({users:Array(String)}, user_id)",
                                   parameters={"users": users}).result_rows[0][0] < len(ticks):
                assert time.monotonic() < deadline, "the sink did not store the ticks"
                time.sleep(0.3)
            report = train_now(settings)
            assert report["learned"] >= 8 and report["cold"] >= 1, report  # the hidden video is not stored
            yield settings, planted, services
    finally:
        server.shutdown()


def reels_of(settings: Settings, user: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{settings.ingest_url}/v1/reels", params={"limit": 50, **params},
                     headers=age_headers(settings, **bearer(settings, user)), timeout=10)


def positions(items: list[dict[str, Any]]) -> dict[str, int]:
    return {item["video_id"]: i for i, item in enumerate(items)}


def assert_taste_first(items: list[dict[str, Any]], planted: Planted, unseen_a: list[Video]) -> None:
    at = positions(items)
    for video in unseen_a + [planted.new_a]:
        assert video.video_id in at, (video.title, items)
        assert all(at[video.video_id] < at.get(b.video_id, len(items)) for b in planted.b), (video.title, items)
    assert at[planted.new_a.video_id] < len(items)


def test_unseen_videos_of_the_users_taste_come_first_never_a_finished_or_unpublished_one(reels_stack: Any) -> None:
    settings, planted, _ = reels_stack
    answer = reels_of(settings, planted.user)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    at = positions(items)
    assert planted.a[0].video_id not in at and planted.a[1].video_id not in at  # finished
    assert planted.hidden_a.video_id not in at  # the best match of all, but not published
    assert_taste_first(items, planted, planted.a[2:])
    for item in items:
        assert set(item) == {"video_id", "title", "video_url", "thumbnail", "score", "heat", "match", "explore"}
        if item["video_id"] in {v.video_id for v in planted.a + planted.b}:  # other tests publish junk urls
            assert item["video_url"].endswith(f"/videos/{item['video_id']}/master.m3u8")
        assert 0 <= item["explore"] < 1 and 0 <= item["heat"] <= 1
        assert item["score"] == pytest.approx(0.3 * item["heat"] + item["match"] + 0.1 * item["explore"], abs=1e-5)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    a_match = min(item["match"] for item in items if item["video_id"] in {v.video_id for v in planted.a})
    assert a_match > max(item["match"] for item in items if item["video_id"] in {v.video_id for v in planted.b})


def test_a_user_without_history_gets_published_videos(reels_stack: Any) -> None:
    settings, planted, _ = reels_stack
    items = reels_of(settings, f"newcomer-{os.getpid()}", limit=5).json()["items"]
    assert 1 <= len(items) <= 5 and all(item["match"] == 0 for item in items)
    assert planted.hidden_a.video_id not in positions(items)


def test_a_finishing_tick_drops_the_video_without_a_training(reels_stack: Any) -> None:
    settings, planted, _ = reels_stack
    finished = planted.a[2]
    answer = httpx.post(f"{settings.ingest_url}/v1/events", json=tick(finished, planted.user, 0.99),
                        headers=bearer(settings, planted.user), timeout=10)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 20
    while finished.video_id in positions(reels_of(settings, planted.user).json()["items"]):
        assert time.monotonic() < deadline, "the finished video is still in the reels"
        time.sleep(0.3)


def test_who_may_ask_and_the_bounds(reels_stack: Any) -> None:
    settings, planted, _ = reels_stack
    admin = httpx.get(f"{settings.ingest_url}/v1/reels", params={"user_id": planted.user},
                      headers=age_headers(settings, **bearer(settings, "root", "admin")), timeout=10)
    assert admin.status_code == 200 and planted.a[0].video_id not in positions(admin.json()["items"])
    other = reels_of(settings, "mallory", user_id=planted.user)
    assert other.status_code == 403 and other.json()["error"]["field"] == "user_id"
    service = httpx.get(f"{settings.ingest_url}/v1/reels", params={"user_id": planted.user},
                        headers=age_headers(settings, **bearer(settings, "simulator", "service")), timeout=10)
    assert service.status_code == 403  # a service may send events for anyone, not read their reels
    assert reels_of(settings, planted.user, user_id=planted.user).status_code == 200  # oneself
    for params, field in (({"limit": 0}, "limit"), ({"limit": 51}, "limit"), ({"user_id": "a b"}, "user_id"),
                          ({"user_id": "x" * 129}, "user_id"), ({"limt": 5}, "limt")):
        error = reels_of(settings, planted.user, **params)
        assert error.status_code == 422 and error.json()["error"]["field"] == field, params
    assert httpx.get(f"{settings.ingest_url}/v1/reels", timeout=10).status_code == 401
    no_age = httpx.get(f"{settings.ingest_url}/v1/reels", headers=bearer(settings, planted.user), timeout=10)
    assert no_age.status_code == 401 and no_age.json()["error"]["code"] == "age_verification_required"
    expired = {"Authorization": "Bearer " + "e30.e30.x"}
    assert httpx.get(f"{settings.ingest_url}/v1/reels", headers=expired, timeout=10).status_code == 401


def test_the_cli_trains_and_milvus_lite_keeps_everything_across_a_kill(
        reels_stack: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings, planted, services = reels_stack
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert main(["recs", "train"]) == 0
    assert "lustrax: trained embeddings of" in capsys.readouterr().out
    health = f"http://127.0.0.1:{settings.recs_web_port}/healthz"
    before = httpx.get(health, timeout=5).json()
    [recs] = [s for s in services if s.name == "recs"]
    os.kill(recs.process.pid, signal.SIGKILL)  # no orderly close: what was written must be on disk
    recs.process.stop()
    assert reels_of(settings, planted.user).status_code == 503  # Milvus is gone: a clear 503, not a 500
    assert main(["recs", "train"]) == 1 and "does not answer" in capsys.readouterr().err
    recs.start()
    recs.wait_ready()
    after = httpx.get(health, timeout=5).json()
    assert (after["videos"], after["learned"], after["model"]) == (before["videos"], before["learned"], before["model"])
    answer = reels_of(settings, planted.user)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert {v.video_id for v in planted.a[:3]}.isdisjoint(positions(items))  # still finished, after the restart
    assert_taste_first(items, planted, planted.a[3:])


def test_training_needs_a_privileged_token(reels_stack: Any) -> None:
    settings, _, _ = reels_stack
    url = f"http://127.0.0.1:{settings.recs_web_port}/v1/train"
    assert httpx.post(url, timeout=10).status_code == 401
    assert httpx.post(url, headers=bearer(settings, "mallory"), timeout=10).status_code == 403

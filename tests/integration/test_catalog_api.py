"""The catalog and the review queue through the real API, fed from the real broker (docs/catalog.md).

Lifecycle events are produced here (new_record + encode, as the pipeline's services make them);
the API's projection reads them back from the topics. The review path runs against the real S3
server: the staged ladder and the moderation record are put where the moderation worker puts them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from catalog.feed import CatalogFeed
from catalog.fold import public_view
from catalog.projection import CatalogProjection
from common.settings import Settings
from common.tokens import issue_token
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from infra.s3.buckets import s3_client
from infra.s3.layout import ladder_prefix, moderation_record_key, new_video_id, public_prefix
from infra.s3.uploads import UploadManifest, write_manifest
from lustrax import cli
from lustrax.review import human_reviewer
from processors.moderation.moderate import ModerationRecord
from producers.app import create_app
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import age_headers, records_on, served
from tests.lifecycle import T0, Event, Video

STATES = ("uploaded", "transcoding", "transcoded", "failed", "in_review", "rejected", "published")


def produce(settings: Settings, events: list[Event]) -> None:
    produce_acknowledged(settings.kafka_bootstrap, [
        OutgoingMessage(TOPIC_BY_SCHEMA[schema].name, record["video_id"].encode(), encode(schema, record))
        for schema, record in events])


def bearer(settings: Settings, user: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings.jwt_signing_secret, user, roles, 600)}"}


def now_offset_s() -> float:
    """Videos of this module are the newest of the run: their times start now."""
    return (datetime.now(UTC) - T0).total_seconds()


def wait_state(api: httpx.Client, admin: dict[str, str], video_id: str, state: str, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        answer = api.get(f"/v1/videos/{video_id}", headers=admin)
        if answer.status_code == 200 and answer.json()["state"] == state:
            return answer.json()
        assert time.monotonic() < deadline, f"{video_id} not {state} in time: {answer.status_code} {answer.text}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def api(ingest_api: str, stack: Settings) -> Iterator[httpx.Client]:
    """A client past the age gate (the catalog is adult content: tests/integration/test_age_gate.py)."""
    with httpx.Client(base_url=ingest_api, timeout=30, headers=age_headers(stack)) as client:
        yield client


@pytest.fixture(scope="module")
def admin(stack: Settings) -> dict[str, str]:
    return bearer(stack, "admin-1", "admin")


@pytest.fixture(scope="module")
def one_per_state(stack: Settings, api: httpx.Client, admin: dict[str, str]) -> dict[str, Video]:
    """One video of uploader `owner-...` in each state, all read by the API."""
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    base = now_offset_s()
    videos = {state: Video(uploader_id=owner, title=f"{state} video", offset_s=base + i)
              for i, state in enumerate(STATES)}
    produce(stack, [event for state, video in videos.items() for event in video.through(state)])
    # As the owner: each topic is read on its own, so a state can be folded before the upload event
    # that names the uploader (until then only admins see the record).
    for state, video in videos.items():
        wait_state(api, bearer(stack, owner), video.video_id, state)
    return videos


def test_each_state_is_served_to_the_right_callers(stack: Settings, api: httpx.Client, admin: dict[str, str],
                                                   one_per_state: dict[str, Video]) -> None:
    owner = bearer(stack, one_per_state["published"].uploader_id)
    other = bearer(stack, "someone-else")
    service = bearer(stack, "svc", "service")
    unknown = api.get(f"/v1/videos/{new_video_id()}", headers=other)
    assert unknown.status_code == 404
    for state, video in one_per_state.items():
        path = f"/v1/videos/{video.video_id}"
        for who, headers in (("owner", owner), ("admin", admin)):
            answer = api.get(path, headers=headers)
            assert answer.status_code == 200, (state, who)
            assert answer.json()["state"] == state
        for who, headers in (("other", other), ("anonymous", {}), ("service", service)):
            answer = api.get(path, headers=headers)
            if state == "published":
                assert answer.status_code == 200 and answer.json()["video_url"], (state, who)
            else:  # exactly what an unknown id answers: the video's existence does not leak
                assert (answer.status_code, answer.json()) == (404, unknown.json()), (state, who)
    record = api.get(f"/v1/videos/{one_per_state['in_review'].video_id}", headers=owner).json()
    assert (record["video_url"], record["thumbnail"], record["published_at"]) == (None, None, None)
    assert record["duration_ms"] == 12_000 and len(record["renditions"]) == 2
    assert api.get(f"/v1/videos/{video.video_id}", headers={"Authorization": "Bearer junk"}).status_code == 401


def test_an_announced_upload_is_awaiting_upload_for_its_uploader_only(stack: Settings, api: httpx.Client) -> None:
    video_id = new_video_id()
    write_manifest(s3_client(stack), stack.s3_uploads_bucket, UploadManifest(
        video_id, "uploader-a", "Soon", "video/mp4", 1000, False, ["x"], datetime.now(UTC).isoformat()))
    answer = api.get(f"/v1/videos/{video_id}", headers=bearer(stack, "uploader-a"))
    assert answer.status_code == 200
    assert (answer.json()["state"], answer.json()["title"]) == ("awaiting_upload", "Soon")
    assert api.get(f"/v1/videos/{video_id}", headers=bearer(stack, "uploader-b")).status_code == 404
    assert api.get(f"/v1/videos/{video_id}").status_code == 404


def _all_pages(api: httpx.Client, headers: dict[str, str], state: str, limit: int) -> list[str]:
    ids, cursor = [], None
    for _ in range(1000):
        params: dict[str, Any] = {"state": state, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = api.get("/v1/videos", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= limit and all(item["state"] == state for item in page["items"])
        ids += [item["video_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the listing does not end")


def test_listing_pages_newest_first_with_cursors(stack: Settings, api: httpx.Client, admin: dict[str, str]) -> None:
    base = now_offset_s() + 100  # newer than every other published video of the run
    videos = [Video(title=f"listed {i}", offset_s=base + 10 * i) for i in range(5)]
    produce(stack, [event for video in videos for event in video.through("published")])
    for video in videos:
        wait_state(api, admin, video.video_id, "published")
    ids = _all_pages(api, {}, "published", 2)
    assert ids[:5] == [video.video_id for video in reversed(videos)]
    assert len(ids) == len(set(ids))


def test_listing_other_states_is_for_admins(stack: Settings, api: httpx.Client, admin: dict[str, str],
                                            one_per_state: dict[str, Video]) -> None:
    owner = bearer(stack, one_per_state["in_review"].uploader_id)
    for headers in ({}, owner):
        answer = api.get("/v1/videos", params={"state": "in_review"}, headers=headers)
        assert (answer.status_code, answer.json()["error"]["field"]) == (403, "state")
    assert one_per_state["failed"].video_id in _all_pages(api, admin, "failed", 50)


@pytest.mark.parametrize(("params", "status", "field"), [
    ({"state": "bogus"}, 422, "state"),
    ({"limit": 0}, 422, "limit"),
    ({"limit": 101}, 422, "limit"),
    ({"limit": "many"}, 422, "limit"),
    ({"cursor": "forged"}, 422, "cursor"),
    ({"cursor": "x" * 600}, 422, "cursor"),
    ({"limt": 5}, 422, "limt"),  # an unknown parameter (a typo) is refused, never ignored
])
def test_bad_listing_parameters_name_the_field(api: httpx.Client, params: dict[str, Any], status: int,
                                               field: str) -> None:
    answer = api.get("/v1/videos", params=params)
    assert (answer.status_code, answer.json()["error"]["field"]) == (status, field)


def test_a_cursor_of_one_state_does_not_page_another(api: httpx.Client, admin: dict[str, str],
                                                     one_per_state: dict[str, Video]) -> None:
    cursor = api.get("/v1/videos", params={"limit": 1}).json()["next_cursor"]
    assert cursor is not None
    answer = api.get("/v1/videos", params={"state": "failed", "cursor": cursor}, headers=admin)
    assert (answer.status_code, answer.json()["error"]["field"]) == (422, "cursor")


# -- the review queue ---------------------------------------------------------------------------
def staged_for_review(settings: Settings, video: Video) -> None:
    """What the pipeline leaves for a video that needs review: manifest, staged ladder, the
    moderation record (NEEDS_REVIEW) in staging; its events on the topics."""
    s3 = s3_client(settings)
    write_manifest(s3, settings.s3_uploads_bucket, UploadManifest(
        video.video_id, video.uploader_id, video.title, "video/mp4", 1000, video.premium, video.tags,
        video.at(0).isoformat()))
    prefix = ladder_prefix(video.video_id)
    for name, body in (("master.m3u8", b"#EXTM3U\n"), ("thumb.jpg", b"\xff\xd8poster"),
                       ("360p/index.m3u8", b"#EXTM3U\n")):
        s3.put_object(Bucket=settings.s3_staging_bucket, Key=prefix + name, Body=body)
    transcoded, decided = video.transcoded(), video.decided("NEEDS_REVIEW")
    review = video.review_requested(decided)
    record = ModerationRecord(video.video_id, str(transcoded[1]["event_id"]), "NEEDS_REVIEW", "nudenet",
                              video.premium, prefix + "thumb.jpg", [encode(*decided), encode(*review)])
    s3.put_object(Bucket=settings.s3_staging_bucket, Key=moderation_record_key(video.video_id),
                  Body=record.to_json())
    produce(settings, [video.uploaded(), transcoded, decided, review])


@pytest.fixture(scope="module")
def in_review(stack: Settings, api: httpx.Client, admin: dict[str, str]) -> list[Video]:
    base = now_offset_s()
    videos = [Video(uploader_id="uploader-r", title=f"review {i}", offset_s=base + i) for i in range(3)]
    for video in videos:
        staged_for_review(stack, video)
    for video in videos:
        wait_state(api, admin, video.video_id, "in_review")
    return videos


def test_the_queue_is_for_admins_oldest_first(stack: Settings, api: httpx.Client, admin: dict[str, str],
                                              in_review: list[Video]) -> None:
    for headers in (bearer(stack, "uploader-r"), bearer(stack, "svc", "service")):
        answer = api.get("/v1/admin/review", headers=headers)
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")
    assert api.get("/v1/admin/review").status_code == 401
    items = api.get("/v1/admin/review", params={"limit": 200}, headers=admin).json()["items"]
    mine = [item for item in items if item["uploader_id"] == "uploader-r"]
    assert [item["video_id"] for item in mine][:3] == [video.video_id for video in in_review]
    assert {key: mine[0][key] for key in ("title", "reasons", "labels")} == {
        "title": "review 0", "reasons": ["Weapons 72% >= 70%: review"],
        "labels": [{"name": "Weapons", "confidence": 72.5}]}
    assert mine[0]["queued_at"].endswith("Z")
    assert api.get("/v1/admin/review", params={"limit": 0}, headers=admin).json()["error"]["field"] == "limit"


def test_approval_publishes_and_the_catalog_shows_it(stack: Settings, api: httpx.Client, admin: dict[str, str],
                                                     in_review: list[Video]) -> None:
    video = in_review[0]
    path = f"/v1/admin/review/{video.video_id}"
    assert api.post(path, json={"decision": "approve"}, headers=bearer(stack, "uploader-r")).status_code == 403
    answer = api.post(path, json={"decision": "approve", "reason": "a kitchen knife"}, headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "published" and answer.json()["video_url"]
    public = httpx.get(f"{stack.public_base_url}/{public_prefix(video.video_id, False)}master.m3u8")
    assert public.status_code == 200  # anonymous, from the public bucket
    [(decided, _)] = records_on(stack.kafka_bootstrap, TOPIC_BY_SCHEMA["ModerationDecided"].name,
                                lambda r: r["video_id"] == video.video_id and r["provider"] == "human")
    assert (decided["decision"], decided["reviewer_id"], decided["reason"]) == ("APPROVED", "admin-1",
                                                                                "a kitchen knife")
    records_on(stack.kafka_bootstrap, TOPIC_BY_SCHEMA["VideoPublished"].name, lambda r: r["video_id"] == video.video_id)
    assert api.get(f"/v1/videos/{video.video_id}").json()["state"] == "published"  # anyone, at once
    again = api.post(path, json={"decision": "approve"}, headers=admin)  # a retry: the same outcome
    assert (again.status_code, again.json()["state"]) == (200, "published")
    flipped = api.post(path, json={"decision": "reject", "reason": "changed my mind"}, headers=admin)
    assert (flipped.status_code, flipped.json()["error"]["field"]) == (409, "video_id")


def test_rejection_never_publishes(stack: Settings, api: httpx.Client, admin: dict[str, str],
                                   in_review: list[Video]) -> None:
    video = in_review[1]
    path = f"/v1/admin/review/{video.video_id}"
    missing = api.post(path, json={"decision": "reject"}, headers=admin)
    assert (missing.status_code, missing.json()["error"]["field"]) == (422, "reason")
    answer = api.post(path, json={"decision": "reject", "reason": "real weapon"}, headers=admin)
    assert (answer.status_code, answer.json()["state"], answer.json()["video_url"]) == (200, "rejected", None)
    assert api.get(f"/v1/videos/{video.video_id}").status_code == 404
    public = httpx.get(f"{stack.public_base_url}/{public_prefix(video.video_id, False)}master.m3u8")
    assert public.status_code in (403, 404)
    assert video.video_id not in [i["video_id"] for i in api.get("/v1/admin/review", headers=admin).json()["items"]]


@pytest.mark.parametrize(("state", "status"), [("published", 409), ("transcoded", 409), ("uploaded", 409)])
def test_deciding_a_video_not_in_review_is_a_conflict(api: httpx.Client, admin: dict[str, str],
                                                      one_per_state: dict[str, Video], state: str,
                                                      status: int) -> None:
    answer = api.post(f"/v1/admin/review/{one_per_state[state].video_id}", json={"decision": "approve"},
                      headers=admin)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, "not_in_review")


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"decision": "maybe"}, 422, "decision"),
    ({}, 422, "decision"),
    ({"decision": "approve", "extra": 1}, 422, "extra"),
    ({"decision": "reject", "reason": "bad\u202etext"}, 422, "reason"),
])
def test_bad_decisions_name_the_field(api: httpx.Client, admin: dict[str, str], in_review: list[Video],
                                      body: dict[str, Any], status: int, field: str) -> None:
    answer = api.post(f"/v1/admin/review/{in_review[2].video_id}", json=body, headers=admin)
    assert (answer.status_code, answer.json()["error"]["field"]) == (status, field)
    unknown = api.post(f"/v1/admin/review/{new_video_id()}", json={"decision": "approve"}, headers=admin)
    assert unknown.status_code == 404


def test_the_cli_lists_approves_and_rejects(stack: Settings, ingest_api: str, api: httpx.Client,
                                            admin: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "load_settings", lambda: stack)
    first, second = (Video(uploader_id="uploader-c", title=f"cli {i}", offset_s=now_offset_s() + i) for i in range(2))
    staged_for_review(stack, first)
    staged_for_review(stack, second)
    wait_state(api, admin, first.video_id, "in_review")
    wait_state(api, admin, second.video_id, "in_review")
    assert cli.main(["review", "--url", ingest_api, "list", "--limit", "200"]) == 0
    listed = capsys.readouterr().out
    assert first.video_id in listed and "cli 0" in listed and "Weapons 72%" in listed
    assert cli.main(["review", "--url", ingest_api, "approve", first.video_id]) == 0
    assert "now published" in capsys.readouterr().out
    assert cli.main(["review", "--url", ingest_api, "reject", second.video_id, "--reason", "no"]) == 0
    assert "now rejected" in capsys.readouterr().out
    assert cli.main(["review", "--url", ingest_api, "reject", first.video_id, "--reason", "no"]) == 1
    assert capsys.readouterr().err.startswith("lustrax: error: 409 not_in_review")
    with pytest.raises(SystemExit):
        cli.main(["review", "--url", ingest_api, "reject", second.video_id])  # --reason is required
    assert cli.main(["review", "--url", "http://127.0.0.1:9", "list"]) == 1
    assert "did not answer" in capsys.readouterr().err


# -- rebuilt from scratch -------------------------------------------------------------------------
def test_a_catalog_rebuilt_from_the_topics_answers_the_same(stack: Settings, api: httpx.Client,
                                                            admin: dict[str, str], one_per_state: dict[str, Video],
                                                            in_review: list[Video]) -> None:
    projection = CatalogProjection()
    feed = CatalogFeed(stack.kafka_bootstrap, projection)
    feed.start()
    try:
        assert feed.wait_caught_up(30)
    finally:
        feed.stop()
    videos = [*one_per_state.values(), *in_review]
    for video in videos:
        record = projection.get(video.video_id)
        assert record is not None
        assert public_view(record) == api.get(f"/v1/videos/{video.video_id}", headers=admin).json()
    # A second replica started now, over HTTP: the same records and the same listings.
    with served(create_app(stack, reviewer=human_reviewer(stack))) as replica_url, \
            httpx.Client(base_url=replica_url, timeout=30, headers=age_headers(stack)) as replica:
        deadline = time.monotonic() + 30
        while (ready := replica.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.1)
        assert ready.json()["catalog"]["caught_up"] is True
        for video in videos:
            path = f"/v1/videos/{video.video_id}"
            assert replica.get(path, headers=admin).json() == api.get(path, headers=admin).json()
        for state in ("published", "in_review", "rejected"):
            assert _all_pages(replica, admin, state, 7) == _all_pages(api, admin, state, 7)

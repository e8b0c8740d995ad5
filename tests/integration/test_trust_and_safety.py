"""Trust and safety end to end on the real broker, S3 server and chDB: a DMCA notice through the
API, the takedown processor (in this process, on a clock the test moves), the catalog, the public
bucket behind the edge, the gateway's subscribers (its own process), the counter-notice and the
restore after ten business days, a court action, strikes and termination, complaints and their
queue, the audit rows in ClickHouse, and what an attacker tries."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from botocore.stub import Stubber
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from common.process import free_port
from lustrax import cli
from common.settings import Settings
from common.tokens import issue_token
from infra.edge.invalidation import VideoInvalidator, video_paths
from infra.edge.server import create_edge_app
from infra.s3.buckets import list_keys, s3_client
from infra.s3.layout import ladder_prefix, moderation_record_key, public_prefix, public_url
from processors.moderation.moderate import ModerationRecord
from processors.moderation.publish import publish_ladder
from processors.takedown.agent import TakedownAgent
from producers.app import create_app
from schemas.envelope import new_record
from tests.helpers import age_headers, age_token, aws_client, running_service, served, wait_until as wait_for
from tests.integration.test_catalog_api import produce
from tests.lifecycle import Video

pytestmark = pytest.mark.integration

PLAYLIST = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n720p/index.m3u8\n"
DISTRIBUTION_ID = "E2QWRUHEXAMPLE"
REPORT_BURST = 15  # notices and complaints per IP before 429: the flood test uses them up, last
HTTP = httpx.Client(timeout=15)  # one client: a new one per request costs an SSL context (~0.1 s)


class MovableClock:
    """The takedown processor's clock: the wall clock plus what the test has advanced it."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Stack:
    settings: Settings
    api: str
    edge: str
    clock: MovableClock
    agent: TakedownAgent
    invalidations: list[dict[str, Any]]  # CreateInvalidation requests, as botocore validated them
    frames: list[dict[str, Any]] = field(default_factory=list)

    def advance(self, days: float) -> None:
        self.clock.offset += timedelta(days=days)
        self.agent.wake.set()

    def headers(self, user: str, *roles: str) -> dict[str, str]:
        """A user's token, past the age gate (the catalog's reads need both)."""
        token = issue_token(self.settings.jwt_signing_secret, user, roles, 600)
        return age_headers(self.settings, Authorization=f"Bearer {token}")

    @property
    def anonymous(self) -> dict[str, str]:
        """Anyone past the age gate, signed in or not."""
        return age_headers(self.settings)


@pytest.fixture(scope="module")
def trust(stack: Settings) -> Iterator[Stack]:
    settings = stack.model_copy(update={
        "ws_port": free_port(), "socketio_port": free_port(), "repeat_infringer_strikes": 2,
        "trust_report_burst": REPORT_BURST, "trust_report_rate_per_min": 1.0, "takedown_tick_s": 0.5})
    clock = MovableClock()
    # CloudFront cannot be reached here: its client answers through botocore's Stubber, which checks
    # each request against the service model; every request is kept for the tests to look at.
    cloudfront = aws_client("cloudfront")
    invalidations: list[dict[str, Any]] = []
    cloudfront.meta.events.register("provide-client-params.cloudfront.CreateInvalidation",
                                    lambda params, **kwargs: invalidations.append(params))
    stubber = Stubber(cloudfront)
    for n in range(100):  # more than the module's takedowns
        stubber.add_response("create_invalidation", {
            "Location": f"https://cloudfront.amazonaws.com/2020-05-31/distribution/{DISTRIBUTION_ID}/invalidation/I{n}",
            "Invalidation": {"Id": f"I{n}", "Status": "InProgress", "CreateTime": datetime.now(UTC),
                             "InvalidationBatch": {"Paths": {"Quantity": 0}, "CallerReference": str(n)}}})
    with served(create_edge_app(settings)) as edge_url, stubber:
        settings = settings.model_copy(update={"cdn_base": edge_url, "cloudfront_distribution_id": DISTRIBUTION_ID})
        agent = TakedownAgent(settings, clock, invalidator=VideoInvalidator(cloudfront, DISTRIBUTION_ID))
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        with running_service(settings, "gateway", settings.ws_port), served(create_app(settings)) as api_url:
            assert agent.feed.wait_caught_up(30)
            yield Stack(settings, api_url, edge_url, clock, agent, invalidations)
        agent.stop()
        thread.join(10)


def invalidations_of(trust: Stack, video_id: str) -> list[dict[str, Any]]:
    return [r for r in trust.invalidations if r["InvalidationBatch"]["Paths"]["Items"] == video_paths(video_id)]


def listen(trust: Stack, channels: list[str]) -> None:
    """A signed-in gateway client subscribed to `channels`, every frame kept (until the run ends)."""

    def run() -> None:
        token = issue_token(trust.settings.jwt_signing_secret, "watcher", (), 600)
        url = f"ws://127.0.0.1:{trust.settings.ws_port}/v1/ws?token={token}&age_token={age_token(trust.settings)}"
        with connect(url) as ws:
            ws.send(json.dumps({"op": "subscribe", "channels": channels}))
            try:
                while True:
                    trust.frames.append(json.loads(ws.recv()))
            except ConnectionClosed:  # the gateway stops with the module
                pass

    threading.Thread(target=run, daemon=True).start()
    wait_for("the subscriptions", lambda: {f["channel"] for f in trust.frames if f.get("type") == "subscribed"}
             >= set(channels))


def published_video(trust: Stack, uploader: str = "bob", premium: bool = False) -> Video:
    """A video as moderation leaves it: its ladder in staging and in the public bucket, its decision
    record, its lifecycle events; returned once the API's catalog shows it."""
    settings, s3 = trust.settings, s3_client(trust.settings)
    video = Video(uploader_id=uploader, premium=premium)
    prefix = ladder_prefix(video.video_id)
    for name, body in (("master.m3u8", PLAYLIST), ("720p/index.m3u8", PLAYLIST), ("thumb.jpg", b"\xff\xd8jpeg")):
        s3.put_object(Bucket=settings.s3_staging_bucket, Key=prefix + name, Body=body)
    record = ModerationRecord(video.video_id, str(uuid.uuid4()), "APPROVED", "local", premium, prefix + "thumb.jpg")
    s3.put_object(Bucket=settings.s3_staging_bucket, Key=moderation_record_key(video.video_id), Body=record.to_json())
    publish_ladder(s3, settings.s3_staging_bucket, settings.s3_public_bucket, video.video_id, premium, prefix + "thumb.jpg")
    uploaded, published = video.uploaded(), video.published()
    uploaded[1]["occurred_at"] = published[1]["occurred_at"] = datetime.now(UTC)
    produce(settings, [uploaded, published])
    wait_for("the catalog shows the video", lambda: HTTP.get(f"{trust.api}/v1/videos/{video.video_id}", headers=trust.anonymous).status_code
             == 200)
    return video


def notice_body(trust: Stack, *video_ids: str) -> dict[str, Any]:
    return {"copyrighted_work": "Sunset over Lisbon (2023 film)",
            "infringing_urls": [public_url(trust.settings.public_base_url, v, False, "master.m3u8") for v in video_ids],
            "complainant": {"name": "Ana Lima", "email": "ana@example.com"},
            "good_faith_statement": True, "accuracy_statement": True, "signature": "Ana Lima"}


def state_of(trust: Stack, video_id: str) -> str:
    answer = HTTP.get(f"{trust.api}/v1/videos/{video_id}", headers=trust.headers("root", "admin"))
    return str(answer.json()["state"])


def edge_status(trust: Stack, video_id: str) -> int:
    return HTTP.get(f"{trust.edge}/{public_prefix(video_id, False)}master.m3u8").status_code


def removed_frames(trust: Stack, video_id: str) -> set[str]:
    return {f["channel"] for f in trust.frames if f.get("type") == "video_removed" and f["data"]["video_id"] == video_id}


def test_notice_takedown_counter_notice_and_restore_after_ten_business_days(trust: Stack, clickhouse: Any,
                                                                             sink: Any) -> None:
    video = published_video(trust)
    video_id = video.video_id
    listen(trust, ["feed", f"video:{video_id}"])
    assert edge_status(trust, video_id) == 200

    answer = HTTP.post(f"{trust.api}/v1/dmca/notices", json=notice_body(trust, video_id))
    assert answer.status_code == 201, answer.text
    notice_id = answer.json()["notice_id"]
    assert answer.json()["video_ids"] == [video_id] and answer.json()["status"] == "received"

    # Taken down: the catalog, the public bucket behind the edge, the subscribers.
    wait_for("the catalog shows taken_down", lambda: state_of(trust, video_id) == "taken_down")
    assert HTTP.get(f"{trust.api}/v1/videos/{video_id}", headers=trust.anonymous).status_code == 404  # not public any more
    listed = HTTP.get(f"{trust.api}/v1/videos", params={"limit": 100}, headers=trust.anonymous).json()["items"]
    assert video_id not in {item["video_id"] for item in listed}
    assert list_keys(s3_client(trust.settings), trust.settings.s3_public_bucket, public_prefix(video_id, False)) == []
    assert edge_status(trust, video_id) in (403, 404)
    # ... and CloudFront's edges, which may still cache the objects, told to forget both its paths
    wait_for("the CloudFront invalidation", lambda: invalidations_of(trust, video_id))
    [invalidation] = invalidations_of(trust, video_id)
    assert invalidation["DistributionId"] == DISTRIBUTION_ID
    assert f"/{public_prefix(video_id, False)}*" in invalidation["InvalidationBatch"]["Paths"]["Items"]
    assert list_keys(s3_client(trust.settings), trust.settings.s3_staging_bucket, ladder_prefix(video_id))  # kept
    wait_for("video_removed on feed and video:{id}",
             lambda: removed_frames(trust, video_id) == {"feed", f"video:{video_id}"})
    admin = trust.headers("root", "admin")
    approve = HTTP.post(f"{trust.api}/v1/admin/review/{video_id}", json={"decision": "approve"}, headers=admin)
    assert (approve.status_code, approve.json()["error"]["code"]) == (409, "taken_down")  # no way back but a restore
    view = HTTP.get(f"{trust.api}/v1/dmca/notices/{notice_id}", headers=admin).json()
    assert view["status"] == "taken_down" and view["videos"][0]["taken_down_at"]

    # Another user's counter-notice is refused; the uploader's is taken and forwarded.
    counter = {"notice_id": notice_id, "video_id": video_id, "good_faith_mistake_statement": True,
               "consent_to_jurisdiction": True, "name": "Bob", "address": "1 Main St", "signature": "Bob"}
    assert HTTP.post(f"{trust.api}/v1/dmca/counter-notices", json=counter,
                      headers=trust.headers("mallory")).status_code == 403
    missing = HTTP.post(f"{trust.api}/v1/dmca/counter-notices", headers=trust.headers("bob"),
                         json={"notice_id": notice_id, "video_id": video_id})
    assert missing.status_code == 422 and set(missing.json()["error"]["fields"]) == {
        "good_faith_mistake_statement", "consent_to_jurisdiction", "name", "address", "signature"}
    taken = HTTP.post(f"{trust.api}/v1/dmca/counter-notices", json=counter, headers=trust.headers("bob"))
    assert taken.status_code == 201, taken.text
    restore_after = datetime.fromisoformat(taken.json()["restore_after"])
    assert timedelta(days=13.99) <= restore_after - datetime.now(UTC) <= timedelta(days=16)  # 10 business days
    assert HTTP.post(f"{trust.api}/v1/dmca/counter-notices", json=counter,
                      headers=trust.headers("bob")).status_code == 409  # once

    trust.advance(9)  # not yet ten business days
    time.sleep(1.0)
    assert state_of(trust, video_id) == "taken_down"
    trust.advance(7)
    wait_for("the video restored", lambda: state_of(trust, video_id) == "published")
    wait_for("the edge serves it again", lambda: edge_status(trust, video_id) == 200)
    assert HTTP.get(f"{trust.api}/v1/videos/{video_id}", headers=trust.anonymous).status_code == 200
    wait_for("the notice restored", lambda: HTTP.get(f"{trust.api}/v1/dmca/notices/{notice_id}",
                                                      headers=admin).json()["status"] == "restored")

    # The whole case in ClickHouse, for audit.
    expected = {"DmcaNoticeReceived", "VideoTakenDown", "PartyNotified", "StrikeRecorded", "DmcaCounterNoticeReceived",
                "VideoRestored", "StrikeWithdrawn"}

    def audited() -> set[str]:
        rows = clickhouse.query(f"SELECT DISTINCT event_type FROM `{trust.settings.clickhouse_database}`.trust_events"
                                " WHERE video_id = {v:String}", parameters={"v": video_id}).result_rows
        found = {row[0] for row in rows}
        return found if expected <= found else set()

    wait_for("the audit rows", audited, timeout_s=30)


def test_a_court_action_stops_the_restore(trust: Stack, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    trust.clock.offset = timedelta()  # back to the wall clock: the counter-notice below is received now
    video_id = published_video(trust, premium=True).video_id
    s3, public = s3_client(trust.settings), trust.settings.s3_public_bucket
    assert list_keys(s3, public, public_prefix(video_id, True))
    notice_id = HTTP.post(f"{trust.api}/v1/dmca/notices", json=notice_body(trust, video_id)).json()["notice_id"]
    wait_for("taken down", lambda: state_of(trust, video_id) == "taken_down")
    assert list_keys(s3, public, public_prefix(video_id, True)) == []  # the premium prefix too
    # The API's case book reads the takedown from its topic apart from the catalog: wait for it too.
    admin = trust.headers("root", "admin")
    wait_for("the case book has the takedown", lambda: HTTP.get(
        f"{trust.api}/v1/dmca/notices/{notice_id}", headers=admin).json()["status"] == "taken_down")
    counter = {"notice_id": notice_id, "video_id": video_id, "good_faith_mistake_statement": True,
               "consent_to_jurisdiction": True, "name": "Bob", "address": "1 Main St", "signature": "Bob"}
    assert HTTP.post(f"{trust.api}/v1/dmca/counter-notices", json=counter,
                      headers=trust.headers("bob")).status_code == 201
    path = f"{trust.api}/v1/admin/dmca/notices/{notice_id}/court-action"
    forged = {"Authorization": "Bearer " + issue_token("not-the-secret-" * 4, "root", ("admin",), 600)}
    assert HTTP.post(path, json={"note": "x"}, headers=forged).status_code == 401
    assert HTTP.post(path, json={"note": "x"}, headers=trust.headers("bob")).status_code == 403
    monkeypatch.setattr(cli, "load_settings", lambda: trust.settings)  # the CLI goes through the API as an admin
    assert cli.main(["dmca", "--url", trust.api, "court-action", notice_id, "--note", "N.D. Cal. 5:26-cv-1"]) == 0
    assert "now court_action" in capsys.readouterr().out
    assert HTTP.post(path, json={}, headers=trust.headers("root", "admin")).json()["status"] == "court_action"
    trust.advance(30)
    time.sleep(1.0)
    assert state_of(trust, video_id) == "taken_down"
    assert list_keys(s3, public, public_prefix(video_id, True)) == []
    assert cli.main(["dmca", "--url", trust.api, "show", notice_id]) == 0
    assert video_id in (shown := capsys.readouterr().out) and "court_action" in shown


def test_strikes_terminate_a_repeat_infringer_whose_uploads_are_then_refused(trust: Stack) -> None:
    carol = f"carol-{uuid.uuid4().hex[:6]}"
    upload = {"title": "t", "content_type": "video/mp4", "size_bytes": 1000}
    first, second = published_video(trust, carol).video_id, published_video(trust, carol).video_id
    for video_id in (first, second):
        assert HTTP.post(f"{trust.api}/v1/dmca/notices", json=notice_body(trust, video_id)).status_code == 201
    refused = wait_for("the upload refused", lambda: (r := HTTP.post(
        f"{trust.api}/v1/uploads", json=upload, headers=trust.headers(carol))).status_code == 403 and r)
    assert refused.json()["error"]["code"] == "account_terminated"
    assert HTTP.post(f"{trust.api}/v1/uploads", json=upload, headers=trust.headers("dave")).status_code == 201


def test_a_depicted_person_complaint_hides_at_once_and_the_queue_decides(
        trust: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    video_id = published_video(trust).video_id
    bad = HTTP.post(f"{trust.api}/v1/complaints", json={"video_id": video_id, "reason": "nope"})
    assert bad.status_code == 422 and set(bad.json()["error"]["fields"]) == {"reason", "contact"}
    answer = HTTP.post(f"{trust.api}/v1/complaints", json={"video_id": video_id, "reason": "depicted_without_consent",
                                                             "contact": "me@example.com", "details": "it is me"})
    assert answer.status_code == 201 and answer.json()["hidden"] is True
    complaint_id = answer.json()["complaint_id"]
    wait_for("hidden at once", lambda: state_of(trust, video_id) == "taken_down")
    assert edge_status(trust, video_id) in (403, 404)
    wait_for("the CloudFront invalidation", lambda: invalidations_of(trust, video_id))
    other = HTTP.post(f"{trust.api}/v1/complaints", json={"video_id": video_id, "reason": "spam", "contact": "x@y.z"})
    assert other.status_code == 201 and other.json()["hidden"] is False

    queue_url = f"{trust.api}/v1/admin/complaints"
    assert HTTP.get(queue_url, headers=trust.headers("bob")).status_code == 403
    items = {item["complaint_id"]: item for item in HTTP.get(
        queue_url, params={"limit": 200}, headers=trust.headers("root", "admin")).json()["items"]}
    assert items[complaint_id]["status"] == "open" and items[complaint_id]["overdue"] is False

    # One received ten days ago (as a replay of the topic shows it): flagged overdue, in the metric too.
    old = datetime.now(UTC) - timedelta(days=12)
    stale_id = "cmp_" + uuid.uuid4().hex[:20]
    produce(trust.settings, [("ComplaintReceived", new_record("ComplaintReceived", "ingest-api", {
        "video_id": video_id, "complaint_id": stale_id, "reason": "OTHER", "contact": "x@y.z", "details": None,
        "uploader_id": "bob", "hide": False, "due_at": old + timedelta(days=9)}, occurred_at=old))])
    flagged = wait_for("the overdue complaint in the queue", lambda: [
        item for item in HTTP.get(queue_url, params={"limit": 200}, headers=trust.headers("root", "admin")).json()["items"]
        if item["complaint_id"] == stale_id and item["overdue"]])
    assert flagged
    assert "lustrax_complaints_overdue 1.0" in HTTP.get(f"{trust.api}/metrics").text

    monkeypatch.setattr(cli, "load_settings", lambda: trust.settings)
    assert cli.main(["complaints", "--url", trust.api, "list", "--limit", "200"]) == 0
    assert complaint_id in capsys.readouterr().out
    assert cli.main(["complaints", "--url", trust.api, "dismiss", complaint_id]) == 0
    assert "now dismissed" in capsys.readouterr().out
    decide = f"{queue_url}/{complaint_id}"
    again = HTTP.post(decide, json={"decision": "dismiss"}, headers=trust.headers("root", "admin"))
    assert again.status_code == 200 and again.json()["status"] == "dismissed"  # the same decision: the same answer
    assert HTTP.post(decide, json={"decision": "uphold"}, headers=trust.headers("root", "admin")).status_code == 409
    wait_for("restored after the dismissal", lambda: state_of(trust, video_id) == "published")
    HTTP.post(f"{queue_url}/{stale_id}", json={"decision": "dismiss"}, headers=trust.headers("root", "admin"))


def test_an_incomplete_notice_names_every_missing_element(trust: Stack) -> None:
    answer = HTTP.post(f"{trust.api}/v1/dmca/notices", json={"infringing_urls": ["nope"],
                                                              "good_faith_statement": False})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert set(error["fields"]) == {"copyrighted_work", "complainant", "good_faith_statement", "accuracy_statement",
                                    "signature", "infringing_urls[0]"}
    assert error["field"] == error["fields"][0]


@pytest.mark.parametrize("notice_id", ["..%2F..%2Fetc", "dmca_" + "a" * 20, "x" * 65, "dmca_%00"])
def test_odd_notice_ids_name_nothing(trust: Stack, notice_id: str) -> None:
    answer = HTTP.get(f"{trust.api}/v1/dmca/notices/{notice_id}", headers=trust.headers("root", "admin"))
    assert answer.status_code in (404, 422)
    assert HTTP.get(f"{trust.api}/v1/dmca/notices/{notice_id}", headers=trust.headers("bob")).status_code in (
        403, 404, 422)


def test_an_oversized_notice_is_refused_before_it_is_read(trust: Stack) -> None:
    size = trust.settings.ingest_max_body_bytes + 1
    answer = HTTP.post(f"{trust.api}/v1/dmca/notices", content=b"{" + b" " * size + b"}",
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_the_form_is_served_without_external_assets(trust: Stack) -> None:
    page = HTTP.get(f"{trust.api}/dmca")
    assert page.status_code == 200 and 'src="/static/dmca.js"' in page.text and "http" not in page.text.split(
        "<body>")[0].replace("http-equiv", "")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert HTTP.get(f"{trust.api}/static/dmca.js").status_code == 200


def test_notice_flooding_is_rate_limited_per_address(trust: Stack) -> None:
    statuses = []
    while 429 not in statuses and len(statuses) <= REPORT_BURST:
        statuses.append(HTTP.post(f"{trust.api}/v1/dmca/notices", json={}).status_code)
    assert statuses[-1] == 429 and set(statuses[:-1]) <= {422}
    limited = HTTP.post(f"{trust.api}/v1/complaints", json={})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1

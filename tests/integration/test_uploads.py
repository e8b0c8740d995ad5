"""The upload flow against the real S3 server and broker: presigned PUT, checked completion."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import imageio_ffmpeg
import pytest

from common.settings import Settings
from infra.s3.buckets import s3_client
from infra.s3.layout import source_key
from schemas.topics import TOPIC_BY_SCHEMA
from tests.integration.test_ingest_api import consume_ids, token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=10", "-t", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    "-preset", "ultrafast", str(path)], check=True)
    return path.read_bytes()


@pytest.fixture()
def api(ingest_api: str) -> httpx.Client:
    with httpx.Client(base_url=ingest_api, timeout=20) as client:
        yield client


def _create(api: httpx.Client, stack: Settings, user: str, size: int, content_type: str = "video/mp4",
            **extra: object) -> httpx.Response:
    body = {"title": "Sunset", "content_type": content_type, "size_bytes": size, "tags": ["beach"], **extra}
    return api.post("/v1/uploads", json=body, headers=token(stack, user))


def test_upload_then_complete_emits_video_uploaded_once(api: httpx.Client, stack: Settings, clip: bytes) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    created = _create(api, stack, user, len(clip), premium=True)
    assert created.status_code == 201, created.text
    ticket = created.json()
    assert set(ticket) == {"video_id", "upload_url", "upload_headers", "expires_at"}
    put = httpx.put(ticket["upload_url"], content=clip, headers=ticket["upload_headers"])
    assert put.status_code == 200, put.text

    first = api.post(f"/v1/uploads/{ticket['video_id']}/complete", headers=token(stack, user))
    assert first.status_code == 202, first.text
    again = api.post(f"/v1/uploads/{ticket['video_id']}/complete", headers=token(stack, user))
    assert again.json()["event_id"] == first.json()["event_id"]  # retries are idempotent downstream

    event_id = first.json()["event_id"]
    found = consume_ids(stack, TOPIC_BY_SCHEMA["VideoUploaded"].name, [event_id])
    key, record = found[event_id][0]
    assert key == ticket["video_id"].encode()
    assert record["uploader_id"] == user and record["title"] == "Sunset" and record["premium"] is True
    assert record["size_bytes"] == len(clip) and record["tags"] == ["beach"]
    assert record["source_bucket"] == stack.s3_uploads_bucket
    assert record["source_key"] == f"sources/{ticket['video_id']}"


def test_a_put_after_completion_cannot_replace_the_checked_source(api: httpx.Client, stack: Settings,
                                                                  clip: bytes) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    ticket = _create(api, stack, user, len(clip)).json()
    assert httpx.put(ticket["upload_url"], content=clip, headers=ticket["upload_headers"]).status_code == 200
    complete = f"/v1/uploads/{ticket['video_id']}/complete"
    first = api.post(complete, headers=token(stack, user))
    assert first.status_code == 202, first.text

    # The presigned URL is still valid: the attacker's PUT succeeds, but lands where nothing reads.
    html = b"<html>swapped</html>".ljust(len(clip), b" ")
    assert httpx.put(ticket["upload_url"], content=html, headers=ticket["upload_headers"]).status_code == 200
    again = api.post(complete, headers=token(stack, user))
    assert again.status_code == 202 and again.json()["event_id"] == first.json()["event_id"]
    s3 = s3_client(stack)
    assert s3.get_object(Bucket=stack.s3_uploads_bucket, Key=source_key(ticket["video_id"]))["Body"].read() == clip
    # Nothing but the server can write the source key: presigned URLs name incoming/ only.
    assert "/sources/" not in ticket["upload_url"]


def test_the_presigned_url_binds_type_and_size(api: httpx.Client, stack: Settings, clip: bytes) -> None:
    ticket = _create(api, stack, "u", len(clip)).json()
    assert httpx.put(ticket["upload_url"], content=clip, headers={"Content-Type": "text/html"}).status_code == 403
    assert httpx.put(ticket["upload_url"], content=clip + b"extra", headers=ticket["upload_headers"]
                     ).status_code in (400, 403)


def test_an_idempotency_key_returns_the_same_upload(api: httpx.Client, stack: Settings) -> None:
    headers = {**token(stack, "u1"), "Idempotency-Key": uuid.uuid4().hex}
    body = {"title": "t", "content_type": "video/mp4", "size_bytes": 1000}
    first = api.post("/v1/uploads", json=body, headers=headers).json()
    second = api.post("/v1/uploads", json=body, headers=headers).json()
    assert first["video_id"] == second["video_id"]
    conflict = api.post("/v1/uploads", json={**body, "size_bytes": 2000}, headers=headers)
    assert conflict.status_code == 409


def test_completion_checks_owner_presence_and_content(api: httpx.Client, stack: Settings, clip: bytes) -> None:
    owner = f"u-{uuid.uuid4().hex[:8]}"
    ticket = _create(api, stack, owner, len(clip)).json()
    complete = f"/v1/uploads/{ticket['video_id']}/complete"
    missing = api.post(complete, headers=token(stack, owner))
    assert missing.status_code == 409 and missing.json()["error"]["code"] == "upload_missing"
    httpx.put(ticket["upload_url"], content=clip, headers=ticket["upload_headers"])
    assert api.post(complete, headers=token(stack, "mallory")).status_code == 403

    fake = b"<html>not a video</html>".ljust(len(clip), b" ")
    fake_ticket = _create(api, stack, owner, len(fake)).json()
    httpx.put(fake_ticket["upload_url"], content=fake, headers=fake_ticket["upload_headers"])
    refused = api.post(f"/v1/uploads/{fake_ticket['video_id']}/complete", headers=token(stack, owner))
    assert refused.status_code == 415 and refused.json()["error"]["field"] == "content_type"


@pytest.mark.parametrize("video_id", ["..%2F..%2Fsecrets", "..", "nope", "A" * 24, "x" * 300])
def test_unknown_or_malformed_video_ids_are_404(api: httpx.Client, stack: Settings, video_id: str) -> None:
    response = api.post(f"/v1/uploads/{video_id}/complete", headers=token(stack, "u"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("overrides", "status", "field"),
    [
        ({"content_type": "application/x-msdownload"}, 415, "content_type"),
        ({"size_bytes": 10 * 1024**4}, 413, "size_bytes"),
        ({"size_bytes": 0}, 422, "size_bytes"),
        ({"title": ""}, 422, "title"),
        ({"title": "t" * 201}, 422, "title"),
        ({"title": "holiday\u202egpj.exe"}, 422, "title"),  # right-to-left override
        ({"title": "two\nlines"}, 422, "title"),
        ({"title": "hidden\u200bword"}, 422, "title"),  # zero-width space
        ({"tags": ["ok", "x\u2066y"]}, 422, "tags[1]"),  # bidi isolate
        ({"tags": ["x"] * 21}, 422, "tags"),
        ({"tags": ["<script>"]}, 422, "tags[0]"),
        ({"key": "../../other"}, 422, "key"),
    ],
)
def test_bad_upload_requests_name_the_field(api: httpx.Client, stack: Settings, overrides: dict[str, object],
                                            status: int, field: str) -> None:
    body = {"title": "t", "content_type": "video/mp4", "size_bytes": 1000, **overrides}
    response = api.post("/v1/uploads", json=body, headers=token(stack, "u"))
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field


def test_uploads_need_a_token(api: httpx.Client, tmp_path: Path) -> None:
    response = api.post("/v1/uploads", json={"title": "t", "content_type": "video/mp4", "size_bytes": 10})
    assert response.status_code == 401


def test_the_checked_version_is_what_gets_copied(stack: Settings) -> None:
    """Completion relies on the S3 server refusing a copy (and a read) of a version it did not check."""
    from botocore.exceptions import ClientError

    s3, bucket, key = s3_client(stack), stack.s3_uploads_bucket, f"incoming-probe/{uuid.uuid4().hex}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"checked")
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"swapped")
    with pytest.raises(ClientError) as copy:
        s3.copy_object(Bucket=bucket, Key=f"{key}-copy", CopySource={"Bucket": bucket, "Key": key},
                       CopySourceIfMatch=etag)
    assert copy.value.response["Error"]["Code"] in ("PreconditionFailed", "412")
    with pytest.raises(ClientError) as read:
        s3.get_object(Bucket=bucket, Key=key, IfMatch=etag)
    assert read.value.response["Error"]["Code"] in ("PreconditionFailed", "412")


def test_a_bidi_override_in_a_title_is_named(api: httpx.Client, stack: Settings) -> None:
    body = {"title": "holiday\u202egpj.exe", "content_type": "video/mp4", "size_bytes": 1000}
    error = api.post("/v1/uploads", json=body, headers=token(stack, "u")).json()["error"]
    assert (error["code"], error["field"]) == ("invalid_value", "title")
    assert "U+202E RIGHT-TO-LEFT OVERRIDE at position 7" in error["message"]

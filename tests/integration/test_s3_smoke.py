"""The real S3 server through boto3: objects, presigned URLs over HTTP, bucket access rules."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import pytest

from infra.s3.buckets import bucket_specs, ensure_buckets, s3_client
from common.settings import Settings

pytestmark = pytest.mark.integration


def _http(url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None
          ) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_buckets_exist_and_creation_is_idempotent(stack: Settings) -> None:
    client = s3_client(stack)
    ensure_buckets(stack, client)
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert {spec.name for spec in bucket_specs(stack)} <= names


def test_put_get_and_presigned_get_over_http(stack: Settings) -> None:
    client = s3_client(stack)
    key = f"smoke/{uuid.uuid4().hex}.bin"
    body = uuid.uuid4().bytes * 1000
    client.put_object(Bucket=stack.s3_uploads_bucket, Key=key, Body=body, ContentType="application/octet-stream")
    assert client.get_object(Bucket=stack.s3_uploads_bucket, Key=key)["Body"].read() == body

    url = client.generate_presigned_url("get_object", Params={"Bucket": stack.s3_uploads_bucket, "Key": key},
                                        ExpiresIn=60)
    status, fetched, _ = _http(url)
    assert (status, fetched) == (200, body)
    # The same object without the signature is refused: the uploads bucket is private.
    assert _http(f"{stack.s3_endpoint}/{stack.s3_uploads_bucket}/{key}")[0] == 403


def test_presigned_put_binds_the_content_type(stack: Settings) -> None:
    client = s3_client(stack)
    key = f"smoke/{uuid.uuid4().hex}.mp4"
    url = client.generate_presigned_url(
        "put_object", Params={"Bucket": stack.s3_uploads_bucket, "Key": key, "ContentType": "video/mp4"},
        ExpiresIn=60)
    assert _http(url, "PUT", b"\x00" * 64, {"Content-Type": "text/html"})[0] == 403
    assert _http(url, "PUT", b"\x00" * 64, {"Content-Type": "video/mp4"})[0] == 200
    head = client.head_object(Bucket=stack.s3_uploads_bucket, Key=key)
    assert (head["ContentType"], head["ContentLength"]) == ("video/mp4", 64)


def test_public_bucket_is_anonymously_readable_but_not_writable_or_listable(stack: Settings) -> None:
    client = s3_client(stack)
    key = f"videos/{uuid.uuid4().hex}/thumb.jpg"
    client.put_object(Bucket=stack.s3_public_bucket, Key=key, Body=b"\xff\xd8jpeg", ContentType="image/jpeg",
                      CacheControl="public, max-age=31536000, immutable")
    status, body, headers = _http(f"{stack.public_origin_url}/{key}")
    assert (status, body) == (200, b"\xff\xd8jpeg")
    assert headers["Content-Type"] == "image/jpeg"
    assert _http(f"{stack.public_origin_url}/videos/x/new.jpg", "PUT", b"evil")[0] == 403
    assert _http(f"{stack.public_origin_url}/")[0] == 403


def test_staging_bucket_is_private(stack: Settings) -> None:
    client = s3_client(stack)
    key = f"videos/{uuid.uuid4().hex}/master.m3u8"
    client.put_object(Bucket=stack.s3_staging_bucket, Key=key, Body=b"#EXTM3U\n")
    assert _http(f"{stack.s3_endpoint}/{stack.s3_staging_bucket}/{key}")[0] == 403

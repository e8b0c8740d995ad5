"""boto3 client for the configured S3 endpoint, and idempotent creation of the project's buckets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from common.settings import Settings
from infra.s3.layout import is_missing


@dataclass(frozen=True)
class BucketSpec:
    name: str
    public_read: bool
    purpose: str


def bucket_specs(settings: Settings) -> list[BucketSpec]:
    return [
        BucketSpec(settings.s3_uploads_bucket, False, "temporary upload sources (presigned PUT)"),
        BucketSpec(settings.s3_staging_bucket, False, "transcoded ladders awaiting moderation"),
        BucketSpec(settings.s3_public_bucket, True, "published ladders and posters (CDN origin)"),
    ]


def public_read_policy(bucket: str) -> str:
    """Anonymous GetObject only: no listing, no writes."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PublicReadObjects",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/*"],
        }],
    })


def s3_client(settings: Settings) -> Any:
    access_key, secret_key = settings.s3_credentials
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def read_object(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, None if there is no such object; other S3 errors are raised."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def head_object(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The object's metadata (HEAD), None if there is no such object."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under `prefix` (paginated)."""
    paginator = s3.get_paginator("list_objects_v2")
    return [item["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])]


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every object under `prefix`; how many there were. Idempotent: none left, 0."""
    keys = list_keys(s3, bucket, prefix)
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                          "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise ClientError({"Error": {"Code": first.get("Code", "DeleteFailed"),
                                         "Message": f"{first.get('Key')}: {first.get('Message')}"}}, "DeleteObjects")
    return len(keys)


def ensure_buckets(settings: Settings, client: Any | None = None) -> list[BucketSpec]:
    client = client or s3_client(settings)
    specs = bucket_specs(settings)
    for spec in specs:
        try:
            client.create_bucket(Bucket=spec.name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        if spec.public_read:
            client.put_bucket_policy(Bucket=spec.name, Policy=public_read_policy(spec.name))
        else:
            # A bucket that was public before (a changed setting) must not stay so.
            try:
                client.delete_bucket_policy(Bucket=spec.name)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("NoSuchBucketPolicy", "NoSuchBucket"):
                    raise
    return specs

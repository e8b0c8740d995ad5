"""S3 side of a job: the source download (size-capped) and the ladder upload (master playlist last)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath
from typing import Any

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from infra.s3.layout import is_missing, ladder_prefix
from processors.transcode.errors import (
    SourceMissingError,
    SourceTooLargeError,
    TranscodeError,
    TransientTranscodeError,
)
from processors.transcode.job import LadderOutput

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".mp4": "video/mp4",
    ".m4s": "video/mp4",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".vtt": "text/vtt",
}
# Media never changes under its key; playlists and the VTT index are re-read soon so that a
# re-run's output is picked up.
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT_LIVED = "public, max-age=60"
_SHORT_LIVED_SUFFIXES = frozenset({".m3u8", ".vtt"})

_UPLOAD_WORKERS = 4
# Segments are a few MB and go up in one PUT; only unusually large files use multipart.
_TRANSFER = TransferConfig(multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024,
                           max_concurrency=4)
_DOWNLOAD_CHUNK = 1024 * 1024
_S3_ERRORS = (BotoCoreError, ClientError, S3UploadFailedError)


def object_headers(relative_path: str) -> dict[str, str]:
    """ContentType and CacheControl for one ladder file."""
    suffix = PurePosixPath(relative_path).suffix.lower()
    if suffix not in CONTENT_TYPES:
        raise ValueError(f"no content type for {relative_path!r}")
    cache = SHORT_LIVED if suffix in _SHORT_LIVED_SUFFIXES else IMMUTABLE
    return {"ContentType": CONTENT_TYPES[suffix], "CacheControl": cache}


def upload_ladder(s3_client: Any, bucket: str, video_id: str, output: LadderOutput) -> list[str]:
    """Put every file of `output` under `videos/{video_id}/`; returns the keys, master playlist last.

    The master playlist goes up only after everything else succeeded, so a reader who finds it
    finds a whole ladder. Keys depend only on the video id: a re-run overwrites in place.
    """
    prefix = ladder_prefix(video_id)
    others = [path for path in output.files if path != output.master]

    def put(relative_path: str) -> None:
        s3_client.upload_file(str(output.directory / relative_path), bucket, prefix + relative_path,
                              ExtraArgs=object_headers(relative_path), Config=_TRANSFER)

    try:
        with ThreadPoolExecutor(max_workers=_UPLOAD_WORKERS) as pool:
            futures = [pool.submit(put, path) for path in others]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        put(output.master)
    except _S3_ERRORS as exc:
        raise TransientTranscodeError(f"upload to s3://{bucket}/{prefix} failed: {exc}") from exc
    return [prefix + path for path in [*others, output.master]]


def download_source(s3_client: Any, bucket: str, key: str, dest: Path, max_bytes: int) -> Path:
    """Stream `s3://bucket/key` to `dest`; refuse sources over `max_bytes` before and while reading.

    The bytes go to `dest.part` first: `dest` exists only complete, and nothing is left on failure.
    """
    location = f"s3://{bucket}/{key}"
    try:
        size = s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except _S3_ERRORS as exc:
        raise _download_error(location, exc) from exc
    if size > max_bytes:
        raise SourceTooLargeError(f"{location} has {size} bytes, more than the limit of {max_bytes}")
    partial = dest.with_name(dest.name + ".part")
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            written = 0
            with partial.open("wb") as out:
                # The object may have been replaced by a larger one since the HEAD.
                for chunk in body.iter_chunks(_DOWNLOAD_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise SourceTooLargeError(f"{location} grew past the limit of {max_bytes} bytes")
                    out.write(chunk)
        finally:
            body.close()
        os.replace(partial, dest)
    except _S3_ERRORS as exc:
        partial.unlink(missing_ok=True)
        raise _download_error(location, exc) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest


def _download_error(location: str, exc: Exception) -> TranscodeError:
    if isinstance(exc, ClientError) and is_missing(exc):
        return SourceMissingError(f"{location} does not exist")
    return TransientTranscodeError(f"download of {location} failed: {exc}")

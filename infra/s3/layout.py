"""Every S3 key and prefix the project uses, and the video id they are made from (pure functions).

Keys are made by the server only, from a video id that matches VIDEO_ID_PATTERN: nothing a client
sends becomes part of a key, so no key can climb out of its prefix.

uploads bucket (private, temporary)
    incoming/{id}            where the client's presigned PUT lands; never read by the pipeline
    sources/{id}             the checked copy of incoming/{id}; the only bytes transcoding reads
    manifests/{id}.json      what the uploader declared (title, type, size, ...)
staging bucket (private)
    videos/{id}/...          the transcoded ladder awaiting moderation
    ladders/{id}.json        the record of a finished ladder (outside videos/{id}/: never published)
    moderation/{id}.json     the record of a video's moderation decision (likewise never published)
    moderation/{id}.poster.jpg  the safe-for-work poster moderation chose, when not the transcoder's
public bucket (the CDN origin)
    videos/{id}/...          a published free video: the seed's videos/{id}/master.m3u8, thumb.jpg
    premium/videos/{id}/...  a published premium video (signed cookies required at the CDN)
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from botocore.exceptions import ClientError

VIDEO_ID_PATTERN = re.compile(r"[a-z2-7]{24}")
# The seed's names inside a ladder: the player's entry point and the poster.
MASTER_PLAYLIST = "master.m3u8"
POSTER = "thumb.jpg"
PREMIUM_ROOT = "premium/"
# The error codes S3 servers answer for an absent object: GET says NoSuchKey, HEAD has no body and
# so only the status (boto3 reports "404"); some servers say NotFound.
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class InvalidVideoId(ValueError):
    """A string that is not a video id: it must never become part of a key."""


def is_video_id(text: str) -> bool:
    return VIDEO_ID_PATTERN.fullmatch(text) is not None


def check_video_id(video_id: str) -> str:
    if not is_video_id(video_id):
        raise InvalidVideoId(f"{video_id!r} is not a video id (24 characters a-z, 2-7)")
    return video_id


def new_video_id(uploader_id: str | None = None, idempotency_key: str | None = None) -> str:
    """24 lowercase base32 characters: random, or derived from (uploader, Idempotency-Key) for retries."""
    if idempotency_key is not None and uploader_id is not None:
        raw = hashlib.sha256(f"{uploader_id}\x00{idempotency_key}".encode()).digest()[:15]
    else:
        raw = secrets.token_bytes(15)
    return base64.b32encode(raw).decode().lower()


def is_missing(error: ClientError) -> bool:
    """The one test for "no such object" (GET, HEAD and copy errors alike)."""
    return error.response.get("Error", {}).get("Code") in _MISSING_CODES


# -- uploads bucket ---------------------------------------------------------------------------
def incoming_key(video_id: str) -> str:
    return f"incoming/{check_video_id(video_id)}"


def source_key(video_id: str) -> str:
    return f"sources/{check_video_id(video_id)}"


def manifest_key(video_id: str) -> str:
    return f"manifests/{check_video_id(video_id)}.json"


# -- staging bucket ---------------------------------------------------------------------------
def ladder_prefix(video_id: str) -> str:
    """`videos/{id}/`: a ladder's prefix in staging (and, for free videos, in the public bucket)."""
    return f"videos/{check_video_id(video_id)}/"


def ladder_record_key(video_id: str) -> str:
    return f"ladders/{check_video_id(video_id)}.json"


def moderation_record_key(video_id: str) -> str:
    return f"moderation/{check_video_id(video_id)}.json"


def moderation_poster_key(video_id: str) -> str:
    return f"moderation/{check_video_id(video_id)}.poster.jpg"


# -- public bucket ----------------------------------------------------------------------------
def public_prefix(video_id: str, premium: bool) -> str:
    """Where a published ladder lives: the seed's `videos/{id}/`, or under `premium/` for premium."""
    return (PREMIUM_ROOT if premium else "") + ladder_prefix(video_id)


def public_url(cdn_base: str, video_id: str, premium: bool, name: str) -> str:
    """`{CDN_BASE}/videos/{id}/{name}` (or `.../premium/videos/...`), e.g. name = master.m3u8."""
    return f"{cdn_base.rstrip('/')}/{public_prefix(video_id, premium)}{name}"


_PUBLIC_PATH = re.compile(r"(?:premium/)?videos/([a-z2-7]{24})(?:/[^?#]*)?")


def video_id_named_by(text: str, cdn_base: str) -> str | None:
    """The video a notice names (a DMCA notice's infringing URL): its id, or one of its public URLs
    under `cdn_base` (`{CDN_BASE}/videos/{id}/...`, `.../premium/videos/{id}/...`, query and
    fragment ignored). None for anything else, a `..` segment included."""
    text = text.strip()
    if is_video_id(text):
        return text
    base = cdn_base.rstrip("/") + "/"
    if not text.startswith(base):
        return None
    path = text[len(base):].split("#", 1)[0].split("?", 1)[0]
    match = _PUBLIC_PATH.fullmatch(path)
    if match is None or any(segment in ("..", ".") for segment in path.split("/")):
        return None
    return match.group(1)

"""GET /v1/videos/{video_id} and GET /v1/videos: the catalog, from this replica's projection (docs/catalog.md).

Anyone who passed the age gate reads published videos (titles and thumbnails are adult content:
producers/deps.py `age_verified`); an unpublished one only its uploader and admins, and to anyone
else it answers 404 exactly as an unknown id does. Listing any state but `published` is for admins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from catalog.access import is_admin, visible
from catalog.fold import PUBLISHED, STATES, VideoRecord, public_view
from common.errors import ApiError
from common.tokens import Principal
from infra.s3.layout import is_video_id
from infra.s3.uploads import read_manifest
from producers.deps import AgeVerifiedDep, ServiceDep, VideoIdPath, optional_principal_of
from producers.openapi import operation
from producers.service import IngestService

router = APIRouter(prefix="/v1/videos")
MAX_LIMIT = 100
State = Literal[STATES]  # type: ignore[valid-type]
OptionalPrincipal = Annotated[Principal | None, optional_principal_of("catalog")]


class Rendition(BaseModel):
    height: int
    width: int
    bandwidth: int


class Video(BaseModel):
    """The catalog record (API.md): `video_url`, `thumbnail` and `published_at` only once published."""

    video_id: str
    title: str | None
    uploader_id: str | None
    state: State
    premium: bool
    tags: list[str]
    duration_ms: int | None
    renditions: list[Rendition]
    video_url: str | None
    thumbnail: str | None
    storyboard: str | None
    published_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class VideoPage(BaseModel):
    items: list[Video]
    next_cursor: str | None


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no video with this video_id", "video_id")


@router.get("/{video_id}", **operation(200, Video, errors=(404, 503), description="The catalog record."),
            description="Anyone past the age gate reads a published video; its uploader and admins any state. "
                        "404 otherwise, as for an unknown id.")
async def get_video(video_id: VideoIdPath, service: ServiceDep, principal: OptionalPrincipal,
                    _age: AgeVerifiedDep) -> dict[str, Any]:
    record = service.catalog.get(video_id)
    if record is None and principal is not None and is_video_id(video_id):
        record = await _awaiting_upload(service, video_id)
    if record is None or not visible(record, principal):
        raise _not_found()
    return public_view(record)


async def _awaiting_upload(service: IngestService, video_id: str) -> VideoRecord | None:
    """A video whose upload was announced but not completed has no event yet: its manifest says so."""
    manifest = await service.storage(read_manifest, service.uploads.s3, service.uploads.bucket, video_id)
    if manifest is None:
        return None
    created = datetime.fromisoformat(manifest.created_at)
    return VideoRecord(video_id, title=manifest.title, uploader_id=manifest.uploader_id, premium=manifest.premium,
                       tags=tuple(manifest.tags), created_at=created, updated_at=created)


@router.get("", **operation(200, VideoPage, errors=(403,), description="Newest first."),
            description="Anyone past the age gate lists published videos; only admins any other state. `cursor` "
                        "is a `next_cursor` this API issued for the same `state` (422 otherwise).")
async def list_videos(service: ServiceDep, principal: OptionalPrincipal, _age: AgeVerifiedDep,
                      state: Annotated[str, Query(json_schema_extra={"enum": list(STATES)})] = PUBLISHED,
                      limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
                      cursor: Annotated[str | None, Query(max_length=512)] = None) -> dict[str, Any]:
    if state not in STATES:
        raise ApiError(422, "invalid_value", f"state must be one of {', '.join(STATES)}", "state")
    if state != PUBLISHED and not is_admin(principal):
        raise ApiError(403, "forbidden", "only admins may list videos that are not published", "state")
    after = service.cursors.decode(state, cursor) if cursor else None
    records, last = service.catalog.page(state, limit, after)
    return {"items": [public_view(record) for record in records],
            "next_cursor": service.cursors.encode(state, last) if last else None}

"""The projection's listings and cursors, and who sees what (catalog/projection.py, cursor.py, access.py)."""

from __future__ import annotations

import base64
import json

import pytest

from catalog.access import visible
from catalog.cursor import CursorCodec, Position
from catalog.fold import fold
from catalog.projection import CatalogProjection
from common.errors import ApiError
from common.tokens import Principal
from tests.lifecycle import Video


def _projection(videos: list[Video], state: str = "published") -> CatalogProjection:
    projection = CatalogProjection()
    projection.apply_all(event for video in videos for event in video.through(state))
    return projection


def test_pages_are_newest_first_and_cover_every_video_once() -> None:
    videos = [Video(offset_s=60 * i) for i in range(7)]
    projection = _projection(videos)
    seen, after = [], None
    while True:
        records, after = projection.page("published", 3, after)
        seen += [record.video_id for record in records]
        if after is None:
            break
    assert seen == [video.video_id for video in reversed(videos)]


def test_a_video_moves_between_state_listings_as_it_progresses() -> None:
    video = Video()
    projection = CatalogProjection()
    projection.apply_all(video.through("in_review"))
    assert [r.video_id for r in projection.page("in_review", 10, None)[0]] == [video.video_id]
    projection.apply_all([video.decided("APPROVED", s=25, provider="human"), video.published(30)])
    assert projection.page("in_review", 10, None)[0] == []
    assert [r.video_id for r in projection.page("published", 10, None)[0]] == [video.video_id]
    assert projection.review_queue(10) == []


def test_redelivered_events_leave_one_entry() -> None:
    video = Video()
    events = video.through("published")
    projection = CatalogProjection()
    for _ in range(3):
        projection.apply_all(events)
    assert len(projection.page("published", 10, None)[0]) == 1
    assert projection.get(video.video_id) == fold(events)[video.video_id]


def test_the_review_queue_is_oldest_first() -> None:
    videos = [Video(offset_s=offset) for offset in (300, 0, 120)]
    queue = _projection(videos, "in_review").review_queue(10)
    assert [record.video_id for record in queue] == [videos[1].video_id, videos[2].video_id, videos[0].video_id]
    assert len(_projection(videos, "in_review").review_queue(2)) == 2


CODEC = CursorCodec("secret-one")


def test_a_cursor_round_trips_for_its_own_listing() -> None:
    position = Position(1_700_000_000_000, "abc")
    assert CODEC.decode("published", CODEC.encode("published", position)) == position


@pytest.mark.parametrize("forged", [
    "not-base64!!",
    "",
    base64.urlsafe_b64encode(json.dumps(["published", 1, "x"]).encode()).decode(),  # unsigned
    CursorCodec("another-secret").encode("published", Position(1, "x")),  # signed by someone else
])
def test_a_forged_cursor_is_refused_naming_the_field(forged: str) -> None:
    with pytest.raises(ApiError) as caught:
        CODEC.decode("published", forged)
    assert (caught.value.status, caught.value.field) == (422, "cursor")


def test_an_altered_cursor_is_refused() -> None:
    raw = bytearray(base64.urlsafe_b64decode(CODEC.encode("published", Position(5, "video")) + "=="))
    raw[-3] ^= 1  # one bit of the body
    with pytest.raises(ApiError):
        CODEC.decode("published", base64.urlsafe_b64encode(bytes(raw)).decode())


def test_a_cursor_of_another_state_is_refused() -> None:
    with pytest.raises(ApiError) as caught:
        CODEC.decode("in_review", CODEC.encode("published", Position(5, "video")))
    assert caught.value.field == "cursor"


OWNER = Principal("alice", frozenset(), 0)
OTHER = Principal("mallory", frozenset(), 0)
ADMIN = Principal("root", frozenset({"admin"}), 0)
SERVICE = Principal("svc", frozenset({"service"}), 0)


@pytest.mark.parametrize(("state", "caller", "sees"), [
    ("published", None, True), ("published", OTHER, True), ("published", OWNER, True),
    ("in_review", None, False), ("in_review", OTHER, False), ("in_review", SERVICE, False),
    ("in_review", OWNER, True), ("in_review", ADMIN, True),
    ("rejected", OTHER, False), ("rejected", OWNER, True), ("uploaded", None, False), ("failed", ADMIN, True),
])
def test_who_sees_a_video(state: str, caller: Principal | None, sees: bool) -> None:
    video = Video(uploader_id="alice")
    assert visible(fold(video.through(state))[video.video_id], caller) is sees

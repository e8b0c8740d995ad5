"""The catalog fold (catalog/fold.py): lifecycle events -> a video's record, in any order, any number of times."""

from __future__ import annotations

import itertools
import random

import pytest

from catalog.fold import STATES, apply, fold, public_view, review_view
from tests.lifecycle import CDN, Video

PATH_STATES = ("uploaded", "transcoding", "transcoded", "failed", "in_review", "rejected", "published")


@pytest.mark.parametrize("state", PATH_STATES)
def test_each_path_ends_in_its_state(state: str) -> None:
    video = Video()
    record = fold(video.through(state))[video.video_id]
    assert record.state == state


# (events in the order they arrive, the state): arrival orders a replay across topics can produce.
def _table() -> list[tuple[str, list[str], str]]:
    return [
        ("published read before its upload", ["published", "uploaded"], "published"),
        ("a late upload does not move a published video back", ["uploaded", "transcoded", "published", "uploaded2"],
         "published"),
        ("progress read after the ladder", ["uploaded", "transcoded", "progress"], "transcoded"),
        ("approved: transcoded until VideoPublished", ["uploaded", "transcoded", "approved"], "transcoded"),
        ("review request before its decision", ["uploaded", "transcoded", "review", "needs_review"], "in_review"),
        ("human approval after review, published", ["needs_review", "review", "human_approved", "published"],
         "published"),
        ("human rejection after review", ["uploaded", "review", "needs_review", "human_rejected"], "rejected"),
        ("retranscode after a failure: the later ladder wins", ["uploaded", "failed", "transcoded_later"],
         "transcoded"),
        ("a failure after an earlier ladder: the later event wins", ["uploaded", "transcoded", "failed_later"],
         "failed"),
        ("the same failure read before the ladder it followed", ["failed_later", "transcoded"], "failed"),
    ]


@pytest.mark.parametrize(("name", "order", "state"), _table(), ids=[row[0] for row in _table()])
def test_state_table(name: str, order: list[str], state: str) -> None:
    video = Video()
    needs_review = video.decided("NEEDS_REVIEW", s=20)
    events = {
        "uploaded": video.uploaded(0), "uploaded2": video.uploaded(40), "progress": video.progress(5),
        "transcoded": video.transcoded(10), "transcoded_later": video.transcoded(60),
        "failed": video.failed(10), "failed_later": video.failed(60),
        "approved": video.decided("APPROVED", s=20), "needs_review": needs_review,
        "review": video.review_requested(needs_review, s=20),
        "human_approved": video.decided("APPROVED", s=25, provider="human", reviewer_id="mod"),
        "human_rejected": video.decided("REJECTED", s=25, provider="human", reviewer_id="mod", reason="no"),
        "published": video.published(30),
    }
    assert fold(events[key] for key in order)[video.video_id].state == state


@pytest.mark.parametrize("state", PATH_STATES)
def test_every_arrival_order_and_any_redelivery_give_the_same_record(state: str) -> None:
    video = Video(premium=True, tags=("a", "b"))
    events = video.through(state)
    expected = fold(events)[video.video_id]
    for order in itertools.permutations(events):
        assert fold(order)[video.video_id] == expected
    rng = random.Random(7)
    for _ in range(20):  # redeliveries: some events twice or three times, shuffled
        replayed = events + rng.choices(events, k=len(events))
        rng.shuffle(replayed)
        assert fold(replayed)[video.video_id] == expected


def test_the_published_record_carries_everything_the_contract_names() -> None:
    video = Video(title="Sunset", uploader_id="bob", tags=("sea",))
    view = public_view(fold(video.through("published"))[video.video_id])
    prefix = f"{CDN}/videos/{video.video_id}/"
    assert view == {
        "video_id": video.video_id, "title": "Sunset", "uploader_id": "bob", "state": "published",
        "premium": False, "tags": ["sea"], "duration_ms": 12_000,
        "renditions": [{"height": 720, "width": 1280, "bandwidth": 2_500_000},
                       {"height": 360, "width": 640, "bandwidth": 800_000}],
        "video_url": prefix + "master.m3u8", "thumbnail": prefix + "thumb.jpg",
        "storyboard": prefix + "storyboard.vtt",
        "published_at": "2026-11-01T12:00:30.000Z", "created_at": "2026-11-01T12:00:00.000Z",
        "updated_at": "2026-11-01T12:00:30.000Z",
    }


def test_premium_urls_are_under_premium() -> None:
    video = Video(premium=True)
    view = public_view(fold(video.through("published"))[video.video_id])
    assert view["video_url"] == f"{CDN}/premium/videos/{video.video_id}/master.m3u8"
    assert view["storyboard"] == f"{CDN}/premium/videos/{video.video_id}/storyboard.vtt"


@pytest.mark.parametrize("state", [s for s in PATH_STATES if s != "published"])
def test_no_urls_before_publication(state: str) -> None:
    video = Video()
    view = public_view(fold(video.through(state))[video.video_id])
    assert (view["video_url"], view["thumbnail"], view["storyboard"], view["published_at"]) == (None,) * 4


def test_a_review_entry_has_the_request_and_the_decisions_labels() -> None:
    video = Video(title="Knife skills")
    entry = review_view(fold(video.through("in_review"))[video.video_id])
    assert entry == {"video_id": video.video_id, "title": "Knife skills", "uploader_id": "alice",
                     "queued_at": "2026-11-01T12:00:20.000Z", "priority": "NORMAL",
                     "reasons": ["Weapons 72% >= 70%: review"], "premium": False,
                     "labels": [{"name": "Weapons", "confidence": 72.5}]}


def test_an_event_of_another_video_or_schema_is_refused() -> None:
    first, second = Video(), Video()
    record = apply(None, *first.uploaded())
    with pytest.raises(ValueError):
        apply(record, *second.uploaded())
    with pytest.raises(ValueError):
        apply(record, "VideoView", first.uploaded()[1])


def test_states_are_the_contracts() -> None:
    assert STATES == ("awaiting_upload", "uploaded", "transcoding", "failed", "transcoded", "in_review",
                      "rejected", "published", "taken_down")


# -- takedowns (docs/catalog.md "Takedowns"): beside the ranked state, a two-phase set of cases ------


def _takedown_events(video: Video) -> dict[str, tuple[str, dict[str, object]]]:
    return {"down_a": video.taken_down("dmca_a", 40), "restored_a": video.restored("dmca_a", 50),
            "down_b": video.taken_down("cmp_b", 45, "COMPLAINT"), "restored_b": video.restored("cmp_b", 55, "COMPLAINT")}


@pytest.mark.parametrize(("steps", "state"), [
    ((), "published"),
    (("down_a",), "taken_down"),
    (("down_a", "restored_a"), "published"),
    (("restored_a", "down_a"), "published"),  # the restore read first still cancels its takedown
    (("down_a", "down_b", "restored_a"), "taken_down"),  # another case keeps it down
    (("down_a", "down_b", "restored_b", "restored_a"), "published"),
])
def test_a_takedown_hides_and_its_restore_brings_the_video_back_in_any_order(steps: tuple[str, ...],
                                                                             state: str) -> None:
    video = Video()
    events = _takedown_events(video)
    lifecycle = video.through("published")
    all_events = lifecycle + [events[step] for step in steps]
    for order in itertools.permutations(all_events[-4:]):  # the takedown events and the publication, any order
        record = fold([*all_events[:-4], *order])[video.video_id]
        assert record.state == state
        assert (public_view(record)["video_url"] is None) == (state == "taken_down")
    assert fold(all_events + all_events)[video.video_id] == fold(all_events)[video.video_id]  # redelivery


def test_a_takedown_of_a_video_in_review_hides_it_and_a_restore_returns_it_to_review() -> None:
    video = Video()
    events = video.through("in_review")
    assert fold([*events, video.taken_down("cmp_x", case_type="COMPLAINT")])[video.video_id].state == "taken_down"
    restored = fold([*events, video.taken_down("cmp_x", case_type="COMPLAINT"),
                     video.restored("cmp_x", case_type="COMPLAINT")])
    assert restored[video.video_id].state == "in_review"

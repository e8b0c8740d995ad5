"""The S3 layout: every key from a checked video id, and one test for a missing object."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from infra.s3.layout import (InvalidVideoId, check_video_id, incoming_key, is_missing, is_video_id, ladder_prefix,
                             ladder_record_key, manifest_key, new_video_id, public_prefix, public_url, source_key)

VIDEO = new_video_id()


def test_video_ids_are_server_made_and_stable_under_an_idempotency_key() -> None:
    ids = {new_video_id() for _ in range(50)}
    assert len(ids) == 50 and all(is_video_id(i) for i in ids)
    assert new_video_id("u", "k1") == new_video_id("u", "k1") != new_video_id("u2", "k1")


@pytest.mark.parametrize("bad", ["", "..", "../../etc/passwd", "A" * 24, "a" * 23, "a" * 25, f"{VIDEO}/x",
                                 f"{VIDEO}\n", "0" * 24, "sim-video-00001"])
def test_anything_else_never_becomes_a_key(bad: str) -> None:
    assert not is_video_id(bad)
    for make in (incoming_key, source_key, manifest_key, ladder_prefix, ladder_record_key):
        with pytest.raises(InvalidVideoId):
            make(bad)
    with pytest.raises(InvalidVideoId):
        public_prefix(bad, premium=False)


def test_the_keys_of_one_video() -> None:
    assert check_video_id(VIDEO) == VIDEO
    assert incoming_key(VIDEO) == f"incoming/{VIDEO}" != source_key(VIDEO) == f"sources/{VIDEO}"
    assert manifest_key(VIDEO) == f"manifests/{VIDEO}.json"
    assert ladder_prefix(VIDEO) == f"videos/{VIDEO}/"
    assert not ladder_record_key(VIDEO).startswith(ladder_prefix(VIDEO))  # never copied with the ladder


def test_published_urls_follow_the_seed_and_premium_lives_apart() -> None:
    assert public_url("https://cdn.lustrax.com/", VIDEO, False, "master.m3u8") == \
        f"https://cdn.lustrax.com/videos/{VIDEO}/master.m3u8"
    assert public_url("https://cdn.lustrax.com", VIDEO, True, "thumb.jpg") == \
        f"https://cdn.lustrax.com/premium/videos/{VIDEO}/thumb.jpg"


@pytest.mark.parametrize(("code", "missing"), [("NoSuchKey", True), ("404", True), ("NotFound", True),
                                               ("AccessDenied", False), ("403", False), ("SlowDown", False)])
def test_one_test_for_a_missing_object(code: str, missing: bool) -> None:
    error = ClientError({"Error": {"Code": code, "Message": "x"}}, "HeadObject")
    assert is_missing(error) is missing

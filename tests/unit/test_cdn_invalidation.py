"""CloudFront invalidation of a taken-down video (infra/edge/invalidation.py), through botocore's
Stubber: each request is checked against CloudFront's service model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from common.errors import ConfigError
from common.settings import load_settings
from infra.edge.invalidation import (
    PendingInvalidations,
    VideoInvalidator,
    invalidation_batch,
    video_invalidator,
    video_paths,
)
from infra.s3.layout import public_url
from tests.helpers import stubbed

VIDEO_ID = "abcdefghijklmnopqrstuvwx"
DISTRIBUTION = "E2QWRUHEXAMPLE"


@pytest.fixture
def client() -> Iterator[tuple[Any, Stubber]]:
    with stubbed("cloudfront") as answered:
        yield answered


def _created(invalidation_id: str, reference: str) -> dict[str, Any]:
    paths = video_paths(VIDEO_ID)
    return {"Location": f"https://cloudfront.amazonaws.com/2020-05-31/distribution/{DISTRIBUTION}/invalidation/{invalidation_id}",
            "Invalidation": {"Id": invalidation_id, "Status": "InProgress", "CreateTime": datetime.now(UTC),
                             "InvalidationBatch": {"Paths": {"Quantity": len(paths), "Items": paths},
                                                   "CallerReference": reference}}}


def test_the_paths_cover_every_url_the_video_was_served_under() -> None:
    for premium in (False, True):
        path = urlsplit(public_url("https://cdn.example.com", VIDEO_ID, premium, "720p/seg_00001.ts")).path
        assert [p for p in video_paths(VIDEO_ID) if path.startswith(p.removesuffix("*"))] != []
    other = urlsplit(public_url("https://cdn.example.com", "bcdefghijklmnopqrstuvwxy", False, "master.m3u8")).path
    assert not any(other.startswith(p.removesuffix("*")) for p in video_paths(VIDEO_ID))


def test_one_request_names_the_distribution_both_paths_and_the_reference(client: tuple[Any, Stubber]) -> None:
    cloudfront, stubber = client
    stubber.add_response("create_invalidation", _created("I2J0I21PCUYOIK", "effect-1"),
                         {"DistributionId": DISTRIBUTION, "InvalidationBatch": invalidation_batch(VIDEO_ID, "effect-1")})
    assert VideoInvalidator(cloudfront, DISTRIBUTION).invalidate(VIDEO_ID, "effect-1") == "I2J0I21PCUYOIK"
    assert invalidation_batch(VIDEO_ID, "effect-1")["Paths"] == {
        "Quantity": 2, "Items": [f"/videos/{VIDEO_ID}/*", f"/premium/videos/{VIDEO_ID}/*"]}


def test_a_refused_request_raises_for_the_takedown_to_retry(client: tuple[Any, Stubber]) -> None:
    cloudfront, stubber = client
    stubber.add_client_error("create_invalidation", "TooManyInvalidationsInProgress", http_status_code=400)
    with pytest.raises(ClientError):
        VideoInvalidator(cloudfront, DISTRIBUTION).invalidate(VIDEO_ID, "effect-2")


def test_no_distribution_no_invalidation_and_a_hostile_id_is_refused(tmp_path: Any) -> None:
    assert video_invalidator(load_settings(home=tmp_path)) is None
    assert video_invalidator(load_settings(home=tmp_path, cloudfront_distribution_id=DISTRIBUTION)) is not None
    for hostile in ("E1/../../2020-05-31/key-group", "e2qwruhexample", "", "E" * 65):
        with pytest.raises(ConfigError):
            load_settings(home=tmp_path, cloudfront_distribution_id=hostile)


def test_a_refused_invalidation_waits_and_is_sent_again_with_the_same_reference(client: tuple[Any, Stubber]) -> None:
    """The quota (15 wildcard paths in progress) refuses a takedown's request: it stays pending, the
    next ones wait behind it, and the retry is the same request (CloudFront's idempotency)."""
    cloudfront, stubber = client
    pending = PendingInvalidations(VideoInvalidator(cloudfront, DISTRIBUTION))
    other = "bcdefghijklmnopqrstuvwxy"
    stubber.add_client_error("create_invalidation", "TooManyInvalidationsInProgress", http_status_code=400,
                             expected_params={"DistributionId": DISTRIBUTION,
                                              "InvalidationBatch": invalidation_batch(VIDEO_ID, "effect-1")})
    pending.add(VIDEO_ID, "effect-1")
    pending.add(other, "effect-2")
    assert pending.retry() == 2 and "TooManyInvalidationsInProgress" in (pending.last_error or "")
    pending.add(VIDEO_ID, "effect-9")  # the same video again: still the first request
    for video_id, reference in ((VIDEO_ID, "effect-1"), (other, "effect-2")):
        stubber.add_response("create_invalidation", _created("I" + reference[-1], reference),
                             {"DistributionId": DISTRIBUTION, "InvalidationBatch": invalidation_batch(video_id, reference)})
    assert pending.retry() == 0 and len(pending) == 0 and pending.last_error is None

"""A {video_id} in a path that the server never made names no video: 404 on every route, before a
route hands it to the S3 layout (which refuses it: a review decision once answered 500 for one)."""

from __future__ import annotations

import asyncio

import pytest
from common.errors import ApiError
from common.settings import load_settings
from infra.s3.layout import new_video_id
from producers.app import create_app
from producers.deps import known_video_id
from producers.openapi import api_routes


@pytest.mark.parametrize("video_id", ["short", "C" * 24, "../" + "a" * 21, "a" * 25, "poison-92bb07161050"])
def test_something_that_is_no_video_id_is_404(video_id: str) -> None:
    with pytest.raises(ApiError) as raised:
        asyncio.run(known_video_id(video_id))
    assert (raised.value.status, raised.value.code, raised.value.field) == (404, "not_found", "video_id")


def test_a_server_made_id_passes() -> None:
    video_id = new_video_id()
    assert asyncio.run(known_video_id(video_id)) == video_id


def _calls(dependant) -> set[object]:  # type: ignore[no-untyped-def]
    return {dependant.call} | {call for sub in dependant.dependencies for call in _calls(sub)}


def test_every_route_with_a_video_id_in_its_path_checks_it() -> None:
    routes = [route for route in api_routes(create_app(load_settings())) if "{video_id}" in route.path]
    assert len(routes) >= 4  # the catalog, uploads, playback and review routes
    for route in routes:
        assert known_video_id in _calls(route.original_route.dependant), route.path

"""Every operation of the OpenAPI document says its security and its errors, in one error body
(producers/openapi.py); a route that does not declare itself through `operation()` fails here."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI

from common.settings import load_settings
from producers.app import create_app
from producers.deps import PrincipalDep
from producers.openapi import AGE_TOKEN, BEARER, BODY_ERRORS, api_routes, openapi_document, operation

ERROR_REF = "#/components/schemas/Error"
# Operations anyone may call: a route that forgot its principal shows up here, so each is listed on purpose.
PUBLIC = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/"), ("get", "/v1/trending"),
          # Trust and safety: anyone may report (no account), rate-limited per IP.
          ("post", "/v1/dmca/notices"), ("get", "/dmca"), ("post", "/v1/complaints")}
OPTIONAL = {("get", "/v1/videos"), ("get", "/v1/videos/{video_id}")}
# The age gate's routes need no account (docs/trust-and-safety.md).
PUBLIC |= {("post", "/v1/age-gate"), ("post", "/v1/age-gate/sessions"), ("post", "/v1/age-gate/callbacks/{provider}"),
           ("post", "/v1/age-gate/sessions/{session_id}/token")}
# Adult content: each of its security alternatives also asks for the age token (API.md "Age gate").
AGE_GATED = {("get", "/v1/videos"), ("get", "/v1/videos/{video_id}"), ("post", "/v1/videos/{video_id}/playback"),
             ("get", "/v1/trending"), ("get", "/v1/reels")}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(load_settings()).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, entry) for path, methods in document["paths"].items() for method, entry in methods.items()]


def test_every_operation_declares_its_security(document: dict[str, Any]) -> None:
    for method, path, entry in operations(document):
        assert "security" in entry, (method, path)
        if (method, path) in PUBLIC:
            expected: list[dict[str, list[str]]] = [{}] if (method, path) in AGE_GATED else []
        elif (method, path) in OPTIONAL:
            expected = [{}, {BEARER: []}]
        else:
            expected = [{BEARER: []}]
        if (method, path) in AGE_GATED:
            expected = [{**alternative, AGE_TOKEN: []} for alternative in expected]
        assert entry["security"] == expected, (method, path)
    assert "security" not in document  # no default for an operation to fall back on
    assert document["components"]["securitySchemes"][BEARER]["scheme"] == "bearer"
    assert document["components"]["securitySchemes"][AGE_TOKEN] == {**document["components"]["securitySchemes"][
        AGE_TOKEN], "type": "apiKey", "in": "header", "name": "X-Age-Token"}


def test_every_operation_declares_its_errors_in_the_one_error_body(document: dict[str, Any]) -> None:
    for method, path, entry in operations(document):
        statuses = {int(status) for status in entry["responses"]}
        [success] = [response for status, response in entry["responses"].items() if 200 <= int(status) < 300]
        # FastAPI's default ("Successful Response", any JSON): the route skipped `operation()`.
        assert success["description"] != "Successful Response", (method, path)
        assert all(media.get("schema") for media in success["content"].values()), (method, path)
        if entry["security"]:
            assert 401 in statuses, (method, path)
            assert "WWW-Authenticate" in entry["responses"]["401"]["headers"]
        if "requestBody" in entry:
            assert set(BODY_ERRORS) <= statuses, (method, path)
        if any(p["in"] in ("query", "header") for p in entry.get("parameters", [])):
            assert 422 in statuses, (method, path)
        if (method, path) not in PUBLIC:
            assert any(400 <= status < 500 for status in statuses), (method, path)
        for status, response in entry["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"] in (ERROR_REF, "#/components/schemas/NotReady"), (method, path, status)
                assert response["description"], (method, path, status)
            if int(status) in (429, 503):
                assert "Retry-After" in response["headers"], (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_content_types_and_strict_request_schemas(document: dict[str, Any]) -> None:
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=1.0.0; charset=utf-8"]
    schemas = document["components"]["schemas"]
    tick = schemas["WatchTickEvent"]["properties"]
    assert tick["position_ms"]["type"] == tick["duration_ms"]["type"] == "integer"
    assert (tick["duration_ms"]["exclusiveMinimum"], tick["duration_ms"]["maximum"]) == (0, 86_400_000)
    assert schemas["Event"]["discriminator"]["propertyName"] == "type"
    assert set(schemas["Event"]["discriminator"]["mapping"]) == {"view", "like", "unlike", "watch_tick"}
    upload = schemas["UploadRequest"]["properties"]
    assert upload["content_type"]["enum"] == ["video/mp4", "video/quicktime", "video/webm", "video/x-matroska"]
    assert upload["size_bytes"]["maximum"] == load_settings().upload_max_bytes
    assert upload["tags"]["maxItems"] == 20 and "pattern" in upload["title"]
    assert schemas["UploadRequest"]["additionalProperties"] is False
    state = next(p for p in document["paths"]["/v1/videos"]["get"]["parameters"] if p["name"] == "state")
    assert "published" in state["schema"]["enum"]


def test_a_new_route_gets_its_implied_errors_and_security_by_construction() -> None:
    router = APIRouter()

    @router.get("/v1/example", **operation(200, errors=(404,)))
    async def example(principal: PrincipalDep) -> dict[str, str]:
        return {}

    @router.get("/page", **operation(200, media_type="text/html"))
    async def page() -> str:
        return ""

    app = FastAPI()
    app.include_router(router)
    document = openapi_document(app, load_settings())
    entry = document["paths"]["/v1/example"]["get"]
    assert entry["security"] == [{BEARER: []}]
    assert set(entry["responses"]) == {"200", "401", "404"}
    page_entry = document["paths"]["/page"]["get"]
    assert page_entry["security"] == [] and list(page_entry["responses"]["200"]["content"]) == ["text/html"]
    assert [route.path_format for route in api_routes(app)] == ["/v1/example", "/page"]

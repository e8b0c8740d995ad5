"""The OpenAPI document (docs/api.md): the contract client teams generate their SDKs from.

Every route declares itself with `**operation(...)`: its success status and body model (or media
type), the request body it parses by hand, and the error statuses of its own. The document adds,
for every operation, what its dependencies imply (`implied_errors`: 401 with a bearer token; 400,
413, 415, 422 with a JSON body; 422 with parameters), its security, derived from the same
dependencies (`producers/deps.py` `get_principal`: bearer JWT; `optional_principal`: bearer or
anonymous; neither: public), and one error body (`Error`) for every 4xx and 5xx.
tests/unit/test_openapi_document.py holds every operation to these rules; the schemathesis test
(tests/integration/test_openapi_contract.py) holds the API to the document.

The routes read the raw body (producers/deps.py JsonBody) and parse it themselves, so that errors
name the field as API.md says; their request-body schemas come from the same pydantic adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from common.settings import Settings
from producers.deps import AGE_COOKIE, age_verified, dependants, get_principal, optional_principal, read_json_body

REF_TEMPLATE = "#/components/schemas/{model}"
BEARER = "bearer"
AGE_TOKEN = "age_token"
# The request bodies' adapters by component name: their schemas are made with the document (not at
# import: the display-text pattern takes a scan of Unicode) and kept apart from the paths, which
# FastAPI rewrites (it drops `default: null`).
BODY_ADAPTERS: dict[str, TypeAdapter[Any]] = {}
# (model, property, keyword, setting): bounds that come from the settings, filled in per document.
SETTING_BOUNDS: list[tuple[str, str, str, str]] = []

# What each error status means anywhere in this API; an operation lists the ones it answers.
ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON (`invalid_json`).",
    401: "No bearer token, or one that is malformed, invalid, expired or lives too long "
         "(`unauthenticated`, `invalid_token`, `token_expired`, `token_lifetime_too_long`); on adult content, no "
         "age token its jurisdiction accepts (`age_verification_required`).",
    403: "The token is valid but not allowed this (`forbidden`, `not_entitled`, `account_terminated`); the age "
         "gate: a method the jurisdiction does not accept, a failed or stale check, a webhook's bad signature "
         "(`method_not_accepted`, `age_verification_failed`, `session_expired`, `invalid_signature`).",
    404: "No such resource, or one the caller may not see (`not_found`, `provider_not_configured`).",
    409: "The resource is not in a state that allows this (`idempotency_conflict`, `upload_missing`, "
         "`upload_changed`, `not_in_review`, `verification_pending`, `taken_down`, `not_taken_down`, "
         "`counter_notice_exists`, `already_restored`, `already_decided`).",
    413: "The body (LUSTRAX_INGEST_MAX_BODY_BYTES), a batch or a declared upload is too large.",
    415: "The body is not `application/json`, or the media type of an upload is not allowed.",
    422: "A field is missing, unknown or invalid; `field` names it (`events[3].user_id`).",
    429: "Rate limited (`rate_limited`): retry after `Retry-After` seconds.",
    503: "A dependency (broker, object storage, the review step) did not answer: nothing was acknowledged; "
         "retry (after `Retry-After` seconds when given).",
}
# Errors an operation answers because of what it depends on.
BODY_ERRORS = (400, 413, 415, 422)
AUTH_ERRORS = (401,)
PARAMETER_ERRORS = (422,)
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
ERROR_HEADERS = {401: {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}},
                 429: RETRY_AFTER, 503: RETRY_AFTER}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    message: str
    field: str | None
    fields: list[str] | None = Field(default=None, description="Every offending field, when there are several "
                                                                "(`field` is the first of them).")


class Error(BaseModel):
    """Every error of the API (API.md): a stable code, a message, and the offending field or null."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


def operation(status: int, model: type[BaseModel] | None = None, *, description: str = "",
              media_type: str | None = None, body: type[BaseModel] | tuple[str, TypeAdapter[Any]] | None = None,
              errors: tuple[int, ...] = (), error_models: dict[int, type[BaseModel]] | None = None
              ) -> dict[str, Any]:
    """The keyword arguments of a route decorator: `@router.post("", **operation(202, EventAccepted,
    body=("Event", EVENT_ADAPTER), errors=(403, 429, 503)))`.

    `model` documents the success body without FastAPI validating it on the way out (the routes
    build their answers); `media_type` replaces JSON for a body that is not (`/metrics`, a page).
    `body` is the model (or a component name and adapter) the route parses its JSON body with.
    `errors` are the statuses the route answers itself beyond those its dependencies imply.
    """
    success: dict[str, Any] = {"description": description or "Success."}
    if model is not None:
        success["model"] = model
    responses: dict[int | str, dict[str, Any]] = {status: success}
    for error in errors:
        responses[error] = {"description": ERROR_DESCRIPTIONS[error],
                            "model": (error_models or {}).get(error, Error)}
    kwargs: dict[str, Any] = {"status_code": status, "responses": responses, "response_model": None}
    if media_type is not None:
        # FastAPI documents the response class's media type: one made for it (a page: "text/html").
        kwargs["response_class"] = type("TextResponse", (PlainTextResponse,), {"media_type": media_type})
    if body is not None:
        name, adapter = (body.__name__, TypeAdapter(body)) if isinstance(body, type) else body
        BODY_ADAPTERS[name] = adapter
        kwargs["openapi_extra"] = {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": REF_TEMPLATE.format(model=name)}}}}}
    return kwargs


def bound_by_setting(model: str, field: str, keyword: str, setting: str) -> None:
    """Document a bound that the settings set (`maximum` of `UploadRequest.size_bytes`)."""
    SETTING_BOUNDS.append((model, field, keyword, setting))


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    return {d.call for d in dependants(dependant) if d.call is not None}


def security_of(route: Any) -> list[dict[str, list[str]]]:
    """What the route's dependencies ask for: a bearer token, optionally one, or nothing; and with
    each, the age token where the route serves adult content (`age_verified`)."""
    calls = _calls(route.dependant)
    age: dict[str, list[str]] = {AGE_TOKEN: []} if age_verified in calls else {}
    if get_principal in calls:
        return [{BEARER: [], **age}]
    if optional_principal in calls:
        return [{**age}, {BEARER: [], **age}]
    return [age] if age else []


def implied_errors(route: Any) -> tuple[int, ...]:
    calls = _calls(route.dependant)
    implied: list[int] = []
    if get_principal in calls or optional_principal in calls or age_verified in calls:
        implied += AUTH_ERRORS
    if read_json_body in calls:
        implied += BODY_ERRORS
    if any(d.query_params or d.header_params or d.cookie_params for d in dependants(route.dependant)):
        implied += PARAMETER_ERRORS
    return tuple(implied)


def api_routes(app: FastAPI) -> Iterator[Any]:
    """The app's documented routes as included (prefixes, router dependencies), as get_openapi sees them."""
    for route in routing.iter_route_contexts(app.routes):
        if isinstance(route.original_route, routing.APIRoute) and route.include_in_schema:
            yield route


def openapi_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The app's document: request bodies under components, security and errors per operation."""
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, adapter in BODY_ADAPTERS.items():
        schema = adapter.json_schema(ref_template=REF_TEMPLATE)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    for model, field, keyword, setting in SETTING_BOUNDS:
        schemas[model]["properties"][field][keyword] = getattr(settings, setting)
    error = TypeAdapter(Error).json_schema(ref_template=REF_TEMPLATE)
    schemas.update(error.pop("$defs"), Error=error)
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body: ours is Error
        schemas.pop(unused, None)
    document["components"]["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                 "description": "API.md \"Auth\": HS256, `sub` is the user"},
        AGE_TOKEN: {"type": "apiKey", "in": "header", "name": "X-Age-Token",
                    "description": f"The age token of `POST /v1/age-gate` (or the `{AGE_COOKIE}` cookie it sets); "
                                   "without an accepted one: 401 `age_verification_required`."}}
    for route in api_routes(app):
        for method in route.methods:
            entry = document["paths"][route.path_format][method.lower()]
            entry["security"] = security_of(route)
            responses = entry.setdefault("responses", {})
            answered = {*implied_errors(route), *(int(s) for s in route.responses if str(s).isdigit())}
            if "422" in responses and 422 not in answered:
                del responses["422"]  # FastAPI's, for path parameters that cannot fail to parse
            for status in implied_errors(route):
                responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    _error_response(int(status), response)
            entry["responses"] = dict(sorted(responses.items()))
            for parameter in entry.get("parameters", []):
                _without_null(parameter)
    return document


def _without_null(parameter: dict[str, Any]) -> None:
    """An optional parameter is absent, never null (a query string has no null): its schema says so."""
    variants = parameter["schema"].get("anyOf", [])
    if len(variants) == 2 and {"type": "null"} in variants:
        [kept] = [v for v in variants if v != {"type": "null"}]
        parameter["schema"] = {**{k: v for k, v in parameter["schema"].items() if k != "anyOf"}, **kept}


def _error_response(status: int, response: dict[str, Any]) -> None:
    response["description"] = response.get("description") or ERROR_DESCRIPTIONS[status]
    content = response.setdefault("content", {}).setdefault("application/json", {})
    schema = content.get("schema", {})
    if schema.get("$ref") in (None, REF_TEMPLATE.format(model="HTTPValidationError")):
        content["schema"] = {"$ref": REF_TEMPLATE.format(model="Error")}
    if status in ERROR_HEADERS:
        response["headers"] = ERROR_HEADERS[status]

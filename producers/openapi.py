"""The OpenAPI document: request bodies from the pydantic models the routes parse by hand.

The routes read the raw body (producers/deps.py JsonBody) and parse it themselves, so that errors
name the field as API.md says; their request-body schemas are declared with `request_body`.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

REF_TEMPLATE = "#/components/schemas/{model}"
# The request bodies' model schemas, for components: kept apart from the paths because FastAPI
# rewrites what it is given there (drops `default: null`, turns ints into floats).
BODY_DEFS: dict[str, Any] = {}


def request_body(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """`openapi_extra={"requestBody": request_body(ADAPTER)}`; the models it refers to go to components."""
    schema = adapter.json_schema(ref_template=REF_TEMPLATE)
    BODY_DEFS.update(schema.pop("$defs", {}))
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's document with the request bodies' models under components, and bearer auth."""
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    document.setdefault("components", {}).setdefault("schemas", {}).update(copy.deepcopy(BODY_DEFS))
    document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                            "bearerFormat": "JWT"}}
    document["security"] = [{"bearer": []}]
    return document

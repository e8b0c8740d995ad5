"""Client events (JSON) -> Avro records: validation and mapping, pure functions, no I/O.

Validation happens twice on purpose: the pydantic models bound every field (lengths, ranges,
formats) and name it in the error; the Avro codec then checks the record against the schema, so
nothing that does not match the schema can reach Kafka.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError,
                      ValidationInfo, WithJsonSchema, field_validator)

from common.errors import ApiError
from producers.text import INVALID_CHARACTERS
from schemas.envelope import new_record
from schemas.topics import TOPIC_BY_SCHEMA

PRODUCER_NAME = "ingest-api"
MAX_BATCH_EVENTS = 500
MAX_MEDIA_MS = 24 * 3600 * 1000
# Clocks drift and clients buffer offline: accept events from the recent past, not the far future.
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_EVENT_AGE = timedelta(days=7)

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]


def json_integer(value: object) -> object:
    """JSON has one number type: 9469.0 is the integer 9469, for JSON Schema's `integer` too. A
    fraction, a string and a boolean are still refused by the strict `int` that follows."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# `field: JsonInteger = Field(ge=0, strict=True)`: an integer as JSON and the OpenAPI document mean it.
JsonInteger = Annotated[int, BeforeValidator(json_integer)]
# What parse_occurred_at takes, as the document says it.
OCCURRED_AT_SCHEMA = {"anyOf": [{"type": "string", "format": "date-time", "maxLength": 40},
                                {"type": "integer", "description": "epoch milliseconds"}, {"type": "null"}],
                      "description": "RFC 3339 with an offset, or epoch milliseconds; at most 7 days old and 5 "
                                     "minutes ahead of the server's clock. Default: when the server received it."}


def parse_occurred_at(value: object) -> datetime:
    """RFC 3339 string or epoch milliseconds -> aware UTC datetime."""
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch milliseconds")
    value = json_integer(value)
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("epoch milliseconds out of range") from None
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("must be an RFC 3339 timestamp such as 2026-11-25T08:00:00Z") from None
        if parsed.tzinfo is None:
            raise ValueError("must carry a time zone offset (e.g. Z)")
        return parsed.astimezone(UTC)
    raise ValueError("must be an RFC 3339 string or epoch milliseconds")


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID | None = None
    occurred_at: Annotated[datetime | None, WithJsonSchema(OCCURRED_AT_SCHEMA)] = None
    video_id: Identifier
    user_id: Identifier

    @field_validator("event_id", mode="before")
    @classmethod
    def _uuid_string(cls, value: object) -> object:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be a UUID string")
        return value

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _timestamp(cls, value: object) -> datetime | None:
        return None if value is None else parse_occurred_at(value)


class ViewEvent(_Event):
    type: Literal["view"]
    session_id: Identifier


class LikeEvent(_Event):
    type: Literal["like", "unlike"]


class WatchTickEvent(_Event):
    type: Literal["watch_tick"]
    session_id: Identifier
    # duration_ms first: the position's validator reads it.
    duration_ms: JsonInteger = Field(gt=0, le=MAX_MEDIA_MS, strict=True)
    position_ms: JsonInteger = Field(ge=0, le=MAX_MEDIA_MS, strict=True, description="At most duration_ms.")

    @field_validator("position_ms")
    @classmethod
    def _position_within_duration(cls, value: int, info: ValidationInfo) -> int:
        duration = info.data.get("duration_ms")
        if duration is not None and value > duration:
            raise ValueError("must not exceed duration_ms")
        return value


ClientEvent = Annotated[Union[ViewEvent, LikeEvent, WatchTickEvent], Field(discriminator="type")]


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[ClientEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


EVENT_ADAPTER: TypeAdapter[ViewEvent | LikeEvent | WatchTickEvent] = TypeAdapter(ClientEvent)
BATCH_ADAPTER: TypeAdapter[EventBatch] = TypeAdapter(EventBatch)

SCHEMA_OF_TYPE = {"view": "VideoView", "like": "VideoLike", "unlike": "VideoLike", "watch_tick": "WatchTick"}
EVENT_TYPES = tuple(SCHEMA_OF_TYPE)


def _field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's location -> `events[3].user_id`; the union's tag names are left out."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in EVENT_TYPES:
            continue
        else:
            path += f".{part}" if path else str(part)
    return path


def validation_error(exc: ValidationError) -> ApiError:
    """The first problem of a pydantic error as the API's error (status, code, field)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    kind, field = error["type"], _field_path(tuple(error["loc"])) or None
    message = f"{field}: {error['msg']}" if field else error["msg"]
    if kind == "json_invalid":
        return ApiError(400, "invalid_json", f"the body is not valid JSON: {error['msg']}", None)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return ApiError(422, "unknown_type", f"type must be one of {', '.join(EVENT_TYPES)}",
                        f"{field}.type" if field else "type")
    if kind == "too_long" and field == "events":
        return ApiError(413, "batch_too_large", f"a batch holds at most {MAX_BATCH_EVENTS} events", "events")
    if kind == "missing":
        return ApiError(422, "missing_field", message, field)
    if kind == "extra_forbidden":
        return ApiError(422, "unknown_field", f"{field}: unknown field", field)
    if kind in ("string_too_long", "string_too_short", "string_pattern_mismatch", "too_short", INVALID_CHARACTERS):
        return ApiError(422, "invalid_value", message, field)
    return ApiError(422, "invalid_field", message, field)


def problems_of(exc: ValidationError, describe: dict[str, str] | None = None) -> dict[str, str]:
    """Every field a pydantic error names -> what is wrong with it (`describe`: what the field is)."""
    names = describe or {}
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        field = _field_path(tuple(error["loc"])) or "body"
        problems.setdefault(field, error["msg"] + (f" ({names[field]})" if field in names else ""))
    return problems


def problems_error(problems: dict[str, str], code: str = "invalid_fields") -> ApiError:
    """One 422 naming every problem: `field` the first, `fields` all of them (a form whose sender must
    learn at once everything that is missing, such as a DMCA notice)."""
    message = "; ".join(f"{field}: {problem}" for field, problem in problems.items())
    return ApiError(422, code, message, next(iter(problems)), fields=tuple(problems))


def every_problem(exc: ValidationError, describe: dict[str, str] | None = None) -> ApiError:
    """problems_error of a pydantic error (a body that is not JSON stays a 400)."""
    if exc.errors()[0]["type"] == "json_invalid":
        return validation_error(exc)
    return problems_error(problems_of(exc, describe))


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_body(model: type[ModelT], body: bytes, every: bool = False,
               describe: dict[str, str] | None = None) -> ModelT:
    """The JSON body as `model`; else the first problem as the API's error, or with `every` one 422
    naming all of them (every_problem)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise (every_problem(exc, describe) if every else validation_error(exc)) from None


def parse_event(body: bytes) -> ViewEvent | LikeEvent | WatchTickEvent:
    try:
        return EVENT_ADAPTER.validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_batch(body: bytes) -> list[ViewEvent | LikeEvent | WatchTickEvent]:
    try:
        return BATCH_ADAPTER.validate_json(body).events
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_event_time(event: _Event, now: datetime, field: str = "occurred_at") -> None:
    if event.occurred_at is None:
        return
    if event.occurred_at > now + MAX_CLOCK_SKEW:
        raise ApiError(422, "invalid_value", f"{field}: lies in the future", field)
    if event.occurred_at < now - MAX_EVENT_AGE:
        raise ApiError(422, "invalid_value", f"{field}: older than {MAX_EVENT_AGE.days} days", field)


def to_avro(event: ViewEvent | LikeEvent | WatchTickEvent, now: datetime) -> tuple[str, str, dict[str, Any]]:
    """(schema name, topic, Avro record). A missing event_id or occurred_at is assigned here."""
    fields: dict[str, Any] = {"video_id": event.video_id, "user_id": event.user_id}
    if isinstance(event, ViewEvent):
        fields["session_id"] = event.session_id
    elif isinstance(event, LikeEvent):
        fields["action"] = event.type.upper()
    else:
        fields.update(session_id=event.session_id, position_ms=event.position_ms, duration_ms=event.duration_ms)
    schema = SCHEMA_OF_TYPE[event.type]
    record = new_record(schema, PRODUCER_NAME, fields, event_id=event.event_id, occurred_at=event.occurred_at or now)
    return schema, TOPIC_BY_SCHEMA[schema].name, record

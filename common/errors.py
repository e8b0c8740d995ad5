"""Errors every layer shares: the CLI's one-line errors and the client-visible API error.

Each package with errors of its own keeps them in its own errors module (schemas, infra, transcode).
"""

from __future__ import annotations


class LustraxError(Exception):
    """Base of every error the CLI reports as one line instead of a traceback."""


class ConfigError(LustraxError):
    """A setting is missing or invalid."""


class ComponentError(LustraxError):
    """A stack component failed to install, start or answer; the message names it and its log."""

    def __init__(self, component: str, message: str, log_path: object | None = None) -> None:
        self.component = component
        self.log_path = log_path
        suffix = f" (log: {log_path})" if log_path else ""
        super().__init__(f"{component}: {message}{suffix}")


class ApiError(Exception):
    """A client-visible error: HTTP status, a stable code, a message and the offending field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after_s: int | None = None, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s
        # Every offending field when there are several (a DMCA notice missing three elements):
        # `field` stays the first, so a client reading only `field` still gets one.
        self.fields = fields

    def body(self) -> dict[str, dict[str, object]]:
        error: dict[str, object] = {"code": self.code, "message": self.message, "field": self.field}
        if self.fields:
            error["fields"] = list(self.fields)
        return {"error": error}


class BrokerUnavailable(ApiError):
    """The broker did not acknowledge in time: nothing is acknowledged to the client."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(503, "broker_unavailable", message, None, retry_after_s)

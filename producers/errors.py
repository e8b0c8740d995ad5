"""Errors of the ingest API; each becomes the JSON error shape of API.md."""

from __future__ import annotations


class ApiError(Exception):
    """A client-visible error: HTTP status, a stable code, a message and the offending field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class BrokerUnavailable(ApiError):
    """The broker did not acknowledge in time: nothing is acknowledged to the client."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(503, "broker_unavailable", message, None, retry_after_s)

"""Yoti's Age Verification Service (AVS): an HTTP client on httpx, and its pure parts.

What this follows (developers.yoti.com, "Age verification": create a session, launch the user view,
results, notifications):

- Every call carries `Authorization: Bearer <API key>` and `Yoti-SDK-Id: <SDK id>` (both from the
  Yoti Hub), JSON both ways.
- `POST {api}/sessions` with `{"type": "OVER", "ttl", "reference_id", "notification_url",
  "callback": {"auto", "url"}, "cancel_url", "<method>": {"allowed", "threshold", ...}}` answers
  `201 {"id", "expires_at"}`. The user is sent to `https://age.yoti.com?sessionId=<id>&sdkId=<sdk id>`.
- `GET {api}/sessions/{id}/result` answers the session: `status` (PENDING, IN_PROGRESS, COMPLETE,
  FAIL, ERROR, CANCELLED, EXPIRED; more may come), `method` (AGE_ESTIMATION, DIGITAL_ID, DOC_SCAN,
  CREDIT_CARD, MOBILE, ...), `type`, each method's configuration with its `threshold`, `created_at`.
- The webhook POSTs `{"method", "result", "age", "session_key", "reference_id", "id", "timestamp",
  "notification_url", "evidence_id", "state", "check_type", "sequence_number", "signature"}`, once
  per attempt. `signature` is base64 RSA-PSS (SHA-256, MGF1-SHA-256) over the UTF-8 JSON of the
  payload without `sequence_number` and `signature`, serialized without whitespace, verified with
  the AVS public key Yoti publishes (bundled: yoti_public_key.pem; LUSTRAX_YOTI_PUBLIC_KEY_FILE
  replaces it).

Nothing that names the user goes to Yoti: the reference id is random and kept nowhere.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from common.errors import ApiError, ConfigError
from common.settings import Settings
from producers.age_providers import ProviderResult, ProviderSession

NAME = "yoti"
BUNDLED_PUBLIC_KEY = Path(__file__).with_name("yoti_public_key.pem")
# Yoti's method -> (its configuration key in a session, our method: common.age_policy.METHODS).
METHODS = {
    "AGE_ESTIMATION": ("age_estimation", "facial_age_estimation"),
    "DOC_SCAN": ("doc_scan", "photo_id_matching"),
    "DIGITAL_ID": ("digital_id", "digital_identity"),
    "CREDIT_CARD": ("credit_card", "credit_card"),
    "MOBILE": ("mobile", "mobile_network_operator"),
}
YOTI_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
UNSIGNED_FIELDS = ("sequence_number", "signature")
WHITESPACE = re.compile(r"\s")


def session_request(settings: Settings, reference_id: str) -> dict[str, Any]:
    """The body of `POST /sessions` (pure): over the minimum age by any highly effective method Yoti
    offers; facial estimation with Yoti's advised buffer and passive liveness."""
    base, age = settings.age_gate_base_url, settings.age_gate_min_age
    return {
        "type": "OVER", "ttl": settings.age_gate_session_ttl_s, "reference_id": reference_id,
        "notification_url": f"{base}/v1/age-gate/callbacks/{NAME}",
        "callback": {"auto": True, "url": f"{base}/?age_gate={NAME}"}, "cancel_url": f"{base}/",
        "synchronous_checks": True,
        "age_estimation": {"allowed": True, "threshold": settings.yoti_age_estimation_threshold, "level": "PASSIVE"},
        "digital_id": {"allowed": True, "threshold": age, "age_estimation_allowed": False},
        "doc_scan": {"allowed": True, "threshold": age, "authenticity": "AUTO", "level": "PASSIVE"},
        "credit_card": {"allowed": True, "threshold": age},
        "mobile": {"allowed": True, "threshold": age},
    }


def _epoch(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0  # unknown: the exchange window refuses it


def parse_result(body: dict[str, Any], min_age: int) -> ProviderResult:
    """A session result (pure): passed when COMPLETE, of type OVER, by a method we map whose
    configured threshold is at least `min_age`."""
    status = str(body.get("status", "")).upper()
    config_key, method = METHODS.get(str(body.get("method", "")), (None, None))
    config = body.get(config_key) if config_key else None
    threshold = config.get("threshold") if isinstance(config, dict) else None
    passed = (status == "COMPLETE" and body.get("type") == "OVER" and method is not None
              and isinstance(threshold, int) and threshold >= min_age)
    return ProviderResult(str(body.get("id", "")), status, passed, method, _epoch(body.get("created_at")))


def signed_payload(notification: dict[str, Any]) -> bytes:
    """What Yoti signs: the notification without sequence_number and signature, no whitespace."""
    rest = {key: value for key, value in notification.items() if key not in UNSIGNED_FIELDS}
    return WHITESPACE.sub("", json.dumps(rest, separators=(",", ":"), ensure_ascii=False)).encode()


def parse_notification(body: bytes, public_key: rsa.RSAPublicKey) -> ProviderResult:
    """A webhook's result once its signature verifies (pure); 400/422 for a body that is not a
    notification, 403 `invalid_signature` for one Yoti did not sign."""
    try:
        notification = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON", None) from None
    if not isinstance(notification, dict):
        raise ApiError(422, "invalid_field", "a notification is a JSON object", None)
    signature = notification.get("signature")
    if not isinstance(signature, str) or not signature:
        raise ApiError(403, "invalid_signature", "the notification carries no signature", "signature")
    try:
        public_key.verify(base64.b64decode(signature, validate=True), signed_payload(notification),
                          padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                          hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        raise ApiError(403, "invalid_signature", "the notification's signature does not verify with Yoti's key",
                       "signature") from None
    session = notification.get("session_key")
    if not isinstance(session, str) or not YOTI_ID.fullmatch(session):
        raise ApiError(422, "invalid_field", "session_key must be a Yoti session id", "session_key")
    state = str(notification.get("state", "")).upper()
    _, method = METHODS.get(str(notification.get("method", "")), (None, None))
    timestamp = notification.get("timestamp")
    at = float(timestamp) if isinstance(timestamp, int | float) and not isinstance(timestamp, bool) else 0.0
    passed = state == "COMPLETE" and notification.get("result") is True and method is not None
    return ProviderResult(session, state, passed, method, at)


def load_public_key(path: Path | None) -> rsa.RSAPublicKey:
    source = path or BUNDLED_PUBLIC_KEY
    try:
        key = load_pem_public_key(source.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"LUSTRAX_YOTI_PUBLIC_KEY_FILE: cannot read an RSA public key from {source}: {exc}") \
            from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"LUSTRAX_YOTI_PUBLIC_KEY_FILE: {source} is not an RSA public key")
    return key


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "provider_unavailable", f"yoti: {message}", None, retry_after_s=5)


class YotiClient:
    """The AgeProvider for Yoti (producers/age_providers/__init__.py)."""

    name = NAME

    def __init__(self, settings: Settings, sdk_id: str, api_key: str) -> None:
        self.settings = settings
        self.sdk_id = sdk_id
        self.public_key = load_public_key(settings.yoti_public_key_file)
        self.http = httpx.AsyncClient(
            base_url=settings.yoti_api_url.rstrip("/") + "/", timeout=settings.yoti_timeout_s,
            headers={"Authorization": f"Bearer {api_key}", "Yoti-SDK-Id": sdk_id, "Accept": "application/json"})

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return await self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise _unavailable(f"no answer ({type(exc).__name__}: {exc})") from None

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 300:
            raise _unavailable(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _unavailable("the answer is not a JSON object")
        return body

    async def create_session(self) -> ProviderSession:
        body = self._json(await self._call("POST", "sessions", session_request(self.settings, uuid.uuid4().hex)))
        session_id = body.get("id")
        if not isinstance(session_id, str) or not YOTI_ID.fullmatch(session_id):
            raise _unavailable("the new session has no usable id")
        query = urlencode({"sessionId": session_id, "sdkId": self.sdk_id})
        return ProviderSession(session_id, f"{self.settings.yoti_user_view_url.rstrip('/')}?{query}")

    async def result(self, session_id: str) -> ProviderResult:
        response = await self._call("GET", f"sessions/{session_id}/result")
        if response.status_code in (400, 404):  # Yoti knows no such session (of ours)
            raise ApiError(404, "not_found", "no age-verification session with this session_id", "session_id")
        result = parse_result(self._json(response), self.settings.age_gate_min_age)
        if result.session_id != session_id:
            raise _unavailable("the result is of another session")
        return result

    def notification(self, body: bytes) -> ProviderResult:
        return parse_notification(body, self.public_key)

    async def close(self) -> None:
        await self.http.aclose()

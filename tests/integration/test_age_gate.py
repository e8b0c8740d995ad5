"""The age gate on the real API (API.md "Age gate", docs/trust-and-safety.md): self-declaration,
the jurisdiction policy, playback and the catalog refused without an accepted age token, and the
provider flow through the real Yoti client against Yoti's recorded contract, served by a local HTTP
server started here (tests/contracts/yoti). The gateway's side is in test_ws_gateway.py and
test_socketio_gateway.py (their gateways are already running there).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from common.errors import ApiError
from common.settings import Settings
from common.tokens import issue_age_token, issue_token
from producers.age_providers.yoti import YotiClient, signed_payload
from processors.loopback import JsonHandler
from producers.app import create_app
from tests.helpers import age_token, served
from tests.integration.test_catalog_api import produce
from tests.lifecycle import Video

pytestmark = pytest.mark.integration
CONTRACT = Path(__file__).resolve().parents[1] / "contracts" / "yoti"
SDK_ID, API_KEY = "5d3add31-3a3a-4d3b-a6b4-347edb35264c", "test-api-key"
DECLARATION = {"method": "self_declaration", "confirm_over_18": True}
IN_GB = {"CloudFront-Viewer-Country": "GB"}  # a strict jurisdiction in this module's settings


def recorded(name: str) -> dict[str, Any]:
    return json.loads((CONTRACT / f"{name}.json").read_text())  # type: ignore[no-any-return]


class YotiContract:
    """Yoti's AVS as its documentation records it: the headers and body it requires, the answers
    it gives. `results` says which recorded result a session id answers (and since when)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.results: dict[str, tuple[str, datetime, dict[str, Any]]] = {}  # name, created_at, changed fields
        contract = self

        class Handler(JsonHandler):
            def _authorized(self) -> bool:
                if self.headers.get("Yoti-SDK-Id") != SDK_ID:
                    self.reply(401, {"error_code": "MISSING_SDK_ID", "error_message": "missing or unknown SDK ID"})
                elif self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    self.reply(403, {"error_code": "INVALID_API_KEY", "error_message": "incorrect API key"})
                else:
                    return True
                return False

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                contract.requests.append(("POST", self.path, dict(self.headers), body))
                if self.path != "/api/v1/sessions":
                    return self.reply(404, {"error_code": "NOT_FOUND"})
                if not self._authorized():
                    return None
                if not isinstance(body, dict) or body.get("type") not in ("OVER", "UNDER", "AGE"):
                    return self.reply(400, {"error_code": "MISSING_FIELD", "error_message": "type"})
                created = {**recorded("session_created"), "id": str(uuid.uuid4())}
                contract.results[created["id"]] = ("result_pending", datetime.now(UTC), {})
                return self.reply(201, created)

            def do_GET(self) -> None:  # noqa: N802
                contract.requests.append(("GET", self.path, dict(self.headers), None))
                parts = self.path.split("/")  # /api/v1/sessions/{id}/result
                if len(parts) != 6 or parts[:4] != ["", "api", "v1", "sessions"] or parts[5] != "result":
                    return self.reply(404, {"error_code": "NOT_FOUND"})
                if not self._authorized():
                    return None
                if parts[4] not in contract.results:
                    return self.reply(404, {"error_code": "SESSION_NOT_FOUND"})
                name, created_at, changes = contract.results[parts[4]]
                return self.reply(200, {**recorded(name), **changes, "id": parts[4],
                                          "created_at": created_at.isoformat()})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def yoti_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def yoti() -> Iterator[YotiContract]:
    contract = YotiContract()
    yield contract
    contract.server.shutdown()


@pytest.fixture(scope="module")
def gate(stack: Settings, yoti: YotiContract, yoti_key: rsa.RSAPrivateKey,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """(settings, URL) of an API with Yoti configured, GB strict, behind a trusted edge's country header."""
    public = tmp_path_factory.mktemp("yoti") / "yoti-avs-public.pem"
    public.write_bytes(yoti_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    settings = stack.model_copy(update={
        "yoti_api_url": yoti.url, "yoti_sdk_id": SDK_ID, "yoti_api_key": API_KEY, "yoti_public_key_file": public,
        "age_gate_strict_jurisdictions": "GB", "age_gate_jurisdiction_header": "CloudFront-Viewer-Country",
        "age_gate_burst": 16, "age_gate_rate_per_min": 1.0, "age_gate_public_url": "https://api.example"})
    with served(create_app(settings)) as url:
        yield settings, url


@pytest.fixture(scope="module")
def published(stack: Settings, gate: tuple[Settings, str]) -> str:
    video = Video(title="an adult title")
    produce(stack, [video.uploaded(), video.published()])
    deadline = time.monotonic() + 30
    while httpx.get(f"{gate[1]}/v1/videos/{video.video_id}", headers={"X-Age-Token": age_token(stack)}
                    ).status_code != 200:
        assert time.monotonic() < deadline, "the catalog did not fold the published video"
        time.sleep(0.2)
    return video.video_id


def _error(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


def test_a_self_declaration_gets_a_token_and_the_cookie(gate: tuple[Settings, str]) -> None:
    settings, url = gate
    answer = httpx.post(f"{url}/v1/age-gate", json=DECLARATION)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["method"], body["assurance"]) == ("self_declaration", "self_declared")
    expires = datetime.fromisoformat(body["expires_at"]).timestamp()
    assert abs(expires - time.time() - settings.age_token_ttl_s) < 60
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"lustrax_age={body['age_token']};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=lax", f"max-age={settings.age_token_ttl_s}", "path=/"} <= attributes
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("body, field", [
    ({"method": "self_declaration", "confirm_over_18": False}, "confirm_over_18"),
    ({"method": "self_declaration"}, "confirm_over_18"),
    ({"method": "i_said_so", "confirm_over_18": True}, "method"),
    ({**DECLARATION, "birth_date": "2001-01-01"}, "birth_date"),
])
def test_a_declaration_that_is_not_one_is_a_422_naming_the_field(gate: tuple[Settings, str], body: dict[str, Any],
                                                                 field: str) -> None:
    answer = httpx.post(f"{gate[1]}/v1/age-gate", json=body)
    assert _error(answer, 422)["field"] == field and "set-cookie" not in answer.headers


def test_hostile_bodies_are_refused_before_anything_is_issued(gate: tuple[Settings, str]) -> None:
    settings, url = gate
    assert httpx.post(f"{url}/v1/age-gate", content=b"confirm_over_18=1").status_code == 415
    big = b'{"method": "self_declaration", "confirm_over_18": true, "x": "' + b"a" * settings.ingest_max_body_bytes
    assert httpx.post(f"{url}/v1/age-gate", content=big, headers={"Content-Type": "application/json"}
                      ).status_code == 413
    assert _error(httpx.post(f"{url}/v1/age-gate", content=b"{", headers={"Content-Type": "application/json"}),
                  400)["code"] == "invalid_json"


def test_a_strict_jurisdiction_refuses_self_declaration(gate: tuple[Settings, str]) -> None:
    answer = httpx.post(f"{gate[1]}/v1/age-gate", json=DECLARATION, headers=IN_GB)
    error = _error(answer, 403)
    assert (error["code"], error["field"]) == ("method_not_accepted", "method") and "GB" in error["message"]
    assert "set-cookie" not in answer.headers
    # A country header that is not a code falls back to the default jurisdiction (ZZ: self-declaration passes).
    assert httpx.post(f"{gate[1]}/v1/age-gate", json=DECLARATION,
                      headers={"CloudFront-Viewer-Country": "GB; drop"}).status_code == 200


def test_playback_and_the_catalog_need_an_accepted_age_token(gate: tuple[Settings, str], published: str) -> None:
    settings, url = gate
    user = {"Authorization": f"Bearer {issue_token(settings.jwt_signing_secret, 'viewer', ())}"}
    play = f"{url}/v1/videos/{published}/playback"
    declared = httpx.post(f"{url}/v1/age-gate", json=DECLARATION).json()["age_token"]
    expired = issue_age_token(settings.age_token_key, "self_declaration", "ZZ", 60, now=time.time() - 61)[0]
    forged = issue_age_token("a key of my own, long enough for HS256", "self_declaration", "ZZ", 60)[0]
    user_token_as_age = user["Authorization"].removeprefix("Bearer ")
    refusals = [{}, {"X-Age-Token": expired}, {"X-Age-Token": forged}, {"X-Age-Token": user_token_as_age},
                {"X-Age-Token": "junk"}, {"X-Age-Token": declared, **IN_GB}]  # last: self-declared, used from GB
    for extra in refusals:
        error = _error(httpx.post(play, headers={**user, **extra}), 401)
        assert (error["code"], error["field"]) == ("age_verification_required", "age_token"), extra
        assert _error(httpx.get(f"{url}/v1/videos/{published}", headers=extra), 401)["code"] == \
            "age_verification_required"
        assert _error(httpx.get(f"{url}/v1/videos", headers=extra), 401)["code"] == "age_verification_required"
        assert _error(httpx.get(f"{url}/v1/trending", headers=extra), 401)["code"] == "age_verification_required"
    granted = httpx.post(play, headers={**user, "X-Age-Token": declared})
    assert granted.status_code == 200 and granted.json()["video_url"].endswith(f"/videos/{published}/master.m3u8")
    by_cookie = httpx.post(play, headers={**user, "Cookie": f"lustrax_age={declared}"})
    assert by_cookie.status_code == 200, by_cookie.text
    assert _error(httpx.post(play, headers={"X-Age-Token": declared}), 401)["code"] == "unauthenticated"
    record = httpx.get(f"{url}/v1/videos/{published}", headers={"X-Age-Token": declared}).json()
    assert record["title"] == "an adult title"
    strong = issue_age_token(settings.age_token_key, "facial_age_estimation", "GB", 600)[0]
    assert httpx.post(play, headers={**user, "X-Age-Token": strong, **IN_GB}).status_code == 200


def _notification(key: rsa.RSAPrivateKey, session: str, **changes: Any) -> dict[str, Any]:
    body = {**recorded("notification"), "session_key": session, "timestamp": int(time.time()), **changes}
    signature = key.sign(signed_payload(body), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                           salt_length=padding.PSS.MAX_LENGTH), hashes.SHA256())
    return {**body, "sequence_number": 1, "signature": base64.b64encode(signature).decode()}


def _new_session(url: str, yoti: YotiContract) -> tuple[str, str]:
    """(our session id, Yoti's) of a session created through the API."""
    answer = httpx.post(f"{url}/v1/age-gate/sessions", json={"provider": "yoti"}, headers=IN_GB)
    assert answer.status_code == 201, answer.text
    session_id = answer.json()["session_id"]
    provider, _, yoti_id = session_id.partition(".")
    assert provider == "yoti" and yoti_id in yoti.results
    assert answer.json()["redirect_url"] == f"https://age.yoti.com?sessionId={yoti_id}&sdkId={SDK_ID}"
    return session_id, yoti_id


def test_the_webhook_path_yoti_signs_and_only_then_the_session_passes(gate: tuple[Settings, str], yoti: YotiContract,
                                                                       yoti_key: rsa.RSAPrivateKey) -> None:
    settings, url = gate
    session_id, yoti_id = _new_session(url, yoti)
    method, path, headers, sent = yoti.requests[-1]
    assert (method, path, headers["Authorization"], headers["Yoti-SDK-Id"]) == (
        "POST", "/api/v1/sessions", f"Bearer {API_KEY}", SDK_ID)
    assert sent["type"] == "OVER" and sent["age_estimation"]["threshold"] == settings.yoti_age_estimation_threshold
    assert sent["notification_url"] == "https://api.example/v1/age-gate/callbacks/yoti"
    token = f"{url}/v1/age-gate/sessions/{session_id}/token"
    assert _error(httpx.post(token, headers=IN_GB), 409)["code"] == "verification_pending"  # Yoti: PENDING

    callback = f"{url}/v1/age-gate/callbacks/yoti"
    forged = _notification(rsa.generate_private_key(public_exponent=65537, key_size=2048), yoti_id)
    tampered = {**_notification(yoti_key, yoti_id, result=False, state="FAIL"), "result": True, "state": "COMPLETE"}
    for body in (forged, tampered, {**recorded("notification"), "session_key": yoti_id}):
        assert _error(httpx.post(callback, json=body), 403)["code"] == "invalid_signature"
    assert _error(httpx.post(token, headers=IN_GB), 409)["code"] == "verification_pending"  # nothing changed

    signed = httpx.post(callback, json=_notification(yoti_key, yoti_id))
    assert signed.status_code == 200 and signed.json() == {"recorded": True}
    answer = httpx.post(token, headers=IN_GB)  # Yoti still says PENDING: the webhook's result counts
    assert answer.status_code == 200, answer.text
    assert (answer.json()["method"], answer.json()["assurance"]) == ("facial_age_estimation", "highly_effective")
    assert answer.headers["set-cookie"].startswith("lustrax_age=")
    stale = _notification(yoti_key, yoti_id, timestamp=int(time.time()) - 24 * 3600)
    assert httpx.post(callback, json=stale).json() == {"recorded": False}
    assert _error(httpx.post(f"{url}/v1/age-gate/callbacks/nobody", json=forged), 404)["code"] == \
        "provider_not_configured"


def test_the_polling_path_the_provider_is_the_source_of_truth(gate: tuple[Settings, str], yoti: YotiContract,
                                                               published: str) -> None:
    settings, url = gate
    session_id, yoti_id = _new_session(url, yoti)
    token = f"{url}/v1/age-gate/sessions/{session_id}/token"
    yoti.results[yoti_id] = ("result_complete", datetime.now(UTC), {})  # no webhook: the API asks Yoti
    answer = httpx.post(token, headers=IN_GB)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["method"], answer.json()["assurance"]) == ("digital_identity", "highly_effective")
    user = {"Authorization": f"Bearer {issue_token(settings.jwt_signing_secret, 'viewer-gb', ())}"}
    play = httpx.post(f"{url}/v1/videos/{published}/playback",
                      headers={**user, **IN_GB, "X-Age-Token": answer.json()["age_token"]})
    assert play.status_code == 200, play.text

    yoti.results[yoti_id] = ("result_complete", datetime(2025, 4, 16, 8, 54, tzinfo=UTC), {})  # the recorded date
    assert _error(httpx.post(token), 403)["code"] == "session_expired"
    yoti.results[yoti_id] = ("result_complete", datetime.now(UTC), {"status": "FAIL"})
    assert _error(httpx.post(token), 403)["code"] == "age_verification_failed"
    below = {"doc_scan": {"threshold": 16}, "method": "DOC_SCAN"}
    yoti.results[yoti_id] = ("result_complete", datetime.now(UTC), below)
    assert _error(httpx.post(token), 403)["code"] == "age_verification_failed"  # below our minimum age
    for bad, code in ((f"yoti.{uuid.uuid4()}", "not_found"), ("nobody.abc", "provider_not_configured"),
                      ("yoti.a_b", "not_found")):
        assert _error(httpx.post(f"{url}/v1/age-gate/sessions/{bad}/token"), 404)["code"] == code
    assert _error(httpx.post(f"{url}/v1/age-gate/sessions", json={"provider": "acme"}), 422)["field"] == "provider"


def test_the_client_maps_yotis_refusals_to_a_503_and_never_a_token(gate: tuple[Settings, str],
                                                                   yoti: YotiContract) -> None:
    settings, _ = gate

    async def attempt(api_key: str) -> ApiError:
        client = YotiClient(settings, SDK_ID, api_key)
        try:
            with pytest.raises(ApiError) as raised:
                await client.create_session()
            return raised.value
        finally:
            await client.close()

    refused = asyncio.run(attempt("a wrong key"))
    assert (refused.status, refused.code) == (503, "provider_unavailable") and "403" in refused.message
    unreachable = settings.model_copy(update={"yoti_api_url": "http://127.0.0.1:9/api/v1", "yoti_timeout_s": 2})

    async def down() -> ApiError:
        client = YotiClient(unreachable, SDK_ID, API_KEY)
        try:
            with pytest.raises(ApiError) as raised:
                await client.result(str(uuid.uuid4()))
            return raised.value
        finally:
            await client.close()

    assert asyncio.run(down()).code == "provider_unavailable"


def test_provider_routes_are_rate_limited_per_address(gate: tuple[Settings, str]) -> None:
    """Last in the module: it spends this address's budget."""
    settings, url = gate
    statuses = []
    while not statuses or statuses[-1] != 429:  # the module's other tests spent part of the burst already
        statuses.append(httpx.post(f"{url}/v1/age-gate/sessions/yoti.{uuid.uuid4()}/token").status_code)
        assert len(statuses) <= settings.age_gate_burst + 1, statuses
    assert set(statuses[:-1]) <= {404}  # Yoti knows no such session
    limited = httpx.post(f"{url}/v1/age-gate/sessions", json={"provider": "yoti"})
    assert _error(limited, 429)["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
    assert httpx.post(f"{url}/v1/age-gate", json=DECLARATION).status_code == 200  # self-declaration costs nothing

"""The age gate's pure parts: the policy per jurisdiction, the age token as an attacker tries it,
Yoti's result, notification signature and session request (docs/trust-and-safety.md)."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from common.age_policy import HIGHLY_EFFECTIVE, HIGHLY_EFFECTIVE_METHODS, SELF_DECLARATION, SELF_DECLARED, AgePolicy, \
    parse_jurisdictions
from common.errors import ApiError
from common.settings import load_settings
from common.tokens import ALGORITHM, AGE_TOKEN_TYPE, AgeVerifier, age_token_key, issue_age_token, issue_token, \
    verify_age_token, verify_token
from producers.age_providers import ProviderResult, split_session_id
from producers.age_providers.yoti import BUNDLED_PUBLIC_KEY, load_public_key, parse_notification, parse_result, \
    session_request, signed_payload
from producers.routers.age_gate import exchangeable_method

SECRET = "s" * 40
KEY = age_token_key(SECRET)
NOW = 1_800_000_000.0
DAY = 24 * 3600
STRICT = AgePolicy(frozenset({"GB"}), "ZZ", "CloudFront-Viewer-Country")


def _refused(token: str | None, key: str = KEY, now: float = NOW) -> str:
    with pytest.raises(ApiError) as raised:
        verify_age_token(key, token, now=now, max_ttl_s=DAY)
    assert (raised.value.status, raised.value.code, raised.value.field) == (401, "age_verification_required",
                                                                           "age_token")
    return raised.value.message


# -- the policy -----------------------------------------------------------------------------------

def test_self_declaration_passes_everywhere_by_default_but_not_in_a_strict_jurisdiction() -> None:
    default = AgePolicy()
    assert default.accepts("US", SELF_DECLARATION) and default.accepts("GB", SELF_DECLARATION)
    assert not STRICT.accepts("GB", SELF_DECLARATION) and STRICT.accepts("FR", SELF_DECLARATION)
    assert STRICT.accepted_methods("GB") == HIGHLY_EFFECTIVE_METHODS == {
        "facial_age_estimation", "photo_id_matching", "open_banking", "mobile_network_operator", "credit_card",
        "digital_identity"}
    assert all(STRICT.accepts("GB", method) for method in HIGHLY_EFFECTIVE_METHODS)
    with pytest.raises(ApiError) as raised:
        STRICT.require("GB", SELF_DECLARATION)
    assert (raised.value.status, raised.value.code) == (401, "age_verification_required")


def test_the_jurisdiction_header_is_read_only_when_a_trusted_edge_is_configured() -> None:
    headers = {"cloudfront-viewer-country": "gb"}
    assert AgePolicy(frozenset({"GB"}), "US").jurisdiction_of(headers) == "US"  # no trusted header: the default
    assert STRICT.jurisdiction_of(headers) == "GB"
    for forged in ("GBR", "G1", "", "GB,US"):  # not a country code: the default, never an error
        assert STRICT.jurisdiction_of({"cloudfront-viewer-country": forged}) == "ZZ"
    assert parse_jurisdictions(" gb, FR ,") == {"GB", "FR"}
    with pytest.raises(ValueError, match="UK1"):
        parse_jurisdictions("GB,UK1")


# -- the token ------------------------------------------------------------------------------------

def test_an_age_token_carries_method_assurance_and_jurisdiction_and_nothing_about_who() -> None:
    token, grant = issue_age_token(KEY, SELF_DECLARATION, "US", DAY, now=NOW)
    assert verify_age_token(KEY, token, now=NOW + 10, max_ttl_s=DAY) == grant
    assert (grant.method, grant.assurance, grant.jurisdiction, grant.expires_at) == (SELF_DECLARATION,
                                                                                   SELF_DECLARED, "US", NOW + DAY)
    claims = jwt.decode(token, KEY, algorithms=[ALGORITHM], options={"verify_exp": False, "verify_iat": False})
    assert set(claims) == {"typ", "method", "assurance", "jur", "iat", "exp"}  # no sub, no address
    _, strong = issue_age_token(KEY, "facial_age_estimation", "GB", DAY, now=NOW)
    assert strong.assurance == HIGHLY_EFFECTIVE


def test_forged_expired_and_out_of_bounds_age_tokens_are_refused() -> None:
    token, _ = issue_age_token(KEY, SELF_DECLARATION, "US", DAY, now=NOW)
    head, body, signature = token.split(".")
    _refused(f"{head}.{body}.{signature[:-4]}AAAA")
    _refused(token, key=age_token_key("another secret"))
    _refused(token, now=NOW + DAY)  # expired
    _refused(None)
    _refused("not a token")
    too_long, _ = issue_age_token(KEY, SELF_DECLARATION, "US", DAY + 1, now=NOW)
    _refused(too_long)
    from_the_future, _ = issue_age_token(KEY, SELF_DECLARATION, "US", DAY, now=NOW + 3600)
    _refused(from_the_future)
    unsigned = jwt.encode({"typ": AGE_TOKEN_TYPE, "method": SELF_DECLARATION, "assurance": SELF_DECLARED,
                           "jur": "US", "iat": NOW, "exp": NOW + 60}, None, algorithm="none",
                          headers={"typ": AGE_TOKEN_TYPE})
    _refused(unsigned)


def test_wrong_method_assurance_or_type_is_refused_even_when_correctly_signed() -> None:
    def signed(**changes: object) -> str:
        claims = {"typ": AGE_TOKEN_TYPE, "method": SELF_DECLARATION, "assurance": SELF_DECLARED, "jur": "US",
                  "iat": NOW, "exp": NOW + 60, **changes}
        return jwt.encode(claims, KEY, algorithm=ALGORITHM, headers={"typ": AGE_TOKEN_TYPE})

    assert "unknown method" in _refused(signed(method="i_said_so"))
    assert "assurance" in _refused(signed(assurance=HIGHLY_EFFECTIVE))  # self-declaration is not highly effective
    assert "not an age token" in _refused(signed(typ="user"))
    assert "not an age token" in _refused(signed(sub="alice"))
    assert "jurisdiction" in _refused(signed(jur="Narnia"))
    assert "expired" not in _refused(signed(exp=float("nan")))


def test_a_user_token_is_no_age_token_and_an_age_token_no_user_token() -> None:
    user = issue_token(SECRET, "alice", now=NOW)
    _refused(user, key=KEY)
    _refused(user, key=SECRET)  # even checked with the JWT secret itself: its type is not an age token's
    age, _ = issue_age_token(KEY, SELF_DECLARATION, "US", DAY, now=NOW)
    for secret in (SECRET, KEY):
        with pytest.raises(ApiError) as raised:
            verify_token(secret, f"Bearer {age}", now=NOW)
        assert raised.value.status == 401
    settings = load_settings(jwt_secret=SECRET)
    assert settings.age_token_key == KEY != SECRET


def test_the_verifier_refuses_a_method_the_requests_jurisdiction_does_not_accept() -> None:
    verifier = AgeVerifier(KEY, STRICT, DAY)
    declared, _ = issue_age_token(KEY, SELF_DECLARATION, "US", DAY, now=NOW)
    assert verifier.verify(declared, {"cloudfront-viewer-country": "US"}, now=NOW).method == SELF_DECLARATION
    with pytest.raises(ApiError) as raised:  # issued in the US, used from Great Britain
        verifier.verify(declared, {"cloudfront-viewer-country": "GB"}, now=NOW)
    assert raised.value.code == "age_verification_required" and "GB" in raised.value.message
    estimated, _ = issue_age_token(KEY, "facial_age_estimation", "GB", DAY, now=NOW)
    assert verifier.verify(estimated, {"cloudfront-viewer-country": "GB"}, now=NOW).assurance == HIGHLY_EFFECTIVE


# -- Yoti -----------------------------------------------------------------------------------------

def _notification(key: rsa.RSAPrivateKey, **changes: object) -> bytes:
    """A notification in Yoti's documented shape, signed as Yoti signs it."""
    body = {"method": "AGE_ESTIMATION", "result": True, "age": 25, "session_key": "69db8ad4-c983-40b3-b95a",
            "reference_id": "r1", "id": "2480375e-ddc0", "timestamp": int(NOW), "notification_url": "https://x/y",
            "evidence_id": "da4070de", "state": "COMPLETE", "check_type": "PASSIVE", **changes}
    signature = key.sign(signed_payload(body), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                           salt_length=padding.PSS.MAX_LENGTH), hashes.SHA256())
    return json.dumps({**body, "sequence_number": 1, "signature": base64.b64encode(signature).decode()},
                      indent=2).encode()


def test_a_notification_counts_only_with_yotis_signature() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    result = parse_notification(_notification(key), public)
    assert (result.session_id, result.passed, result.method, result.at) == (
        "69db8ad4-c983-40b3-b95a", True, "facial_age_estimation", NOW)
    assert not parse_notification(_notification(key, state="FAIL", result=False), public).passed
    assert not parse_notification(_notification(key, method="LOGIN"), public).passed  # a method we do not map
    tampered = json.loads(_notification(key, result=False))
    tampered["result"] = True
    forged_by_another = _notification(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    for body in (json.dumps(tampered).encode(), forged_by_another,
                 json.dumps({**tampered, "signature": "%%%"}).encode(), json.dumps({"state": "COMPLETE"}).encode()):
        with pytest.raises(ApiError) as raised:
            parse_notification(body, public)
        assert (raised.value.status, raised.value.code) == (403, "invalid_signature")
    with pytest.raises(ApiError) as raised:
        parse_notification(b"[1]", public)
    assert raised.value.status == 422
    assert load_public_key(None).key_size == 3072 and BUNDLED_PUBLIC_KEY.exists()  # Yoti's published AVS key


def test_a_session_result_passes_only_complete_over_the_minimum_age_by_a_known_method() -> None:
    complete = {"id": "s1", "type": "OVER", "status": "COMPLETE", "method": "DOC_SCAN",
                "doc_scan": {"threshold": 18, "allowed": True}, "created_at": "2026-11-01T12:00:00.5Z"}
    result = parse_result(complete, 18)
    assert (result.passed, result.method, result.status) == (True, "photo_id_matching", "COMPLETE")
    assert result.at == pytest.approx(1_793_534_400.5)
    assert not parse_result(complete, 21).passed  # configured below our minimum age
    assert not parse_result({**complete, "type": "UNDER"}, 18).passed
    assert not parse_result({**complete, "method": "LOGIN"}, 18).passed
    pending = parse_result({**complete, "status": "PENDING", "method": None}, 18)
    assert pending.pending and not pending.passed


def test_an_exchange_needs_a_passed_recent_session() -> None:
    passed = ProviderResult("s1", "COMPLETE", True, "credit_card", NOW)
    assert exchangeable_method(passed, NOW + 100, 1500) == "credit_card"
    for result, now, code in ((ProviderResult("s1", "IN_PROGRESS", False, None, NOW), NOW, "verification_pending"),
                              (ProviderResult("s1", "FAIL", False, "credit_card", NOW), NOW, "age_verification_failed"),
                              (passed, NOW + 1501, "session_expired")):
        with pytest.raises(ApiError) as raised:
            exchangeable_method(result, now, 1500)
        assert raised.value.code == code
    assert split_session_id("yoti.14010f56-3f04") == ("yoti", "14010f56-3f04")
    for bad in ("yoti", "yoti.", "YOTI.x", "yoti.a/b", "yoti." + "a" * 65):
        with pytest.raises(ApiError) as raised:
            split_session_id(bad)
        assert raised.value.status == 404


def test_the_session_request_asks_over_the_minimum_age_by_highly_effective_methods_only() -> None:
    settings = load_settings(age_gate_public_url="https://api.example/", yoti_age_estimation_threshold=25)
    body = session_request(settings, "ref")
    assert (body["type"], body["reference_id"], body["ttl"]) == ("OVER", "ref", settings.age_gate_session_ttl_s)
    assert body["notification_url"] == "https://api.example/v1/age-gate/callbacks/yoti"
    assert body["age_estimation"] == {"allowed": True, "threshold": 25, "level": "PASSIVE"}
    assert all(body[m]["threshold"] == 18 and body[m]["allowed"] for m in ("doc_scan", "digital_id", "credit_card",
                                                                           "mobile"))

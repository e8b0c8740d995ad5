"""CloudFront signed cookies: the policy CloudFront expects, a signature the public key verifies,
and the edge's check refusing forged, tampered, expired, other-prefix and incomplete cookies."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from infra.edge.cloudfront import (COOKIE_NAMES, KEY_PAIR_COOKIE, POLICY_COOKIE, SIGNATURE_COOKIE, CookieRefused,
                                   cloudfront_b64decode, cloudfront_b64encode, resource_matches, sign_cookies,
                                   verify_cookies)
from infra.edge.server import origin_key

CDN = "https://cdn.example.com"
VIDEO, OTHER = "a" * 24, "b" * 24
RESOURCE = f"{CDN}/premium/videos/{VIDEO}/*"
KEY_ID = "K2JCJMDEHXQW5F"
NOW = 1_750_000_000
EXPIRES = NOW + 3600


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys(key: rsa.RSAPrivateKey) -> dict[str, rsa.RSAPublicKey]:
    return {KEY_ID: key.public_key()}


def _policy(cookies: dict[str, str]) -> dict:
    return json.loads(cloudfront_b64decode(cookies[POLICY_COOKIE]))


def _signed(key: rsa.RSAPrivateKey, policy: bytes, key_id: str = KEY_ID) -> dict[str, str]:
    """Cookies for an arbitrary policy: what a client holding the key could make."""
    signature = key.sign(policy, padding.PKCS1v15(), hashes.SHA1())
    return {POLICY_COOKIE: cloudfront_b64encode(policy), SIGNATURE_COOKIE: cloudfront_b64encode(signature),
            KEY_PAIR_COOKIE: key_id}


def test_the_policy_has_the_shape_cloudfront_expects(key: rsa.RSAPrivateKey) -> None:
    signed = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES)
    assert _policy(signed.cookies) == {
        "Statement": [{"Resource": RESOURCE, "Condition": {"DateLessThan": {"AWS:EpochTime": EXPIRES}}}]}
    assert signed.cookies[KEY_PAIR_COOKIE] == KEY_ID and signed.expires_at == EXPIRES
    with_ip = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES, source_ip="203.0.113.7")
    assert _policy(with_ip.cookies)["Statement"][0]["Condition"] == {
        "DateLessThan": {"AWS:EpochTime": EXPIRES}, "IpAddress": {"AWS:SourceIp": "203.0.113.7/32"}}


def test_the_signature_is_rsa_sha1_over_the_policy_and_verifies_with_the_public_key(key: rsa.RSAPrivateKey) -> None:
    cookies = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES).cookies
    policy = cloudfront_b64decode(cookies[POLICY_COOKIE])
    # Raises InvalidSignature otherwise: checked with cryptography directly, not with our verifier.
    key.public_key().verify(cloudfront_b64decode(cookies[SIGNATURE_COOKIE]), policy, padding.PKCS1v15(),
                            hashes.SHA1())
    for value in (cookies[POLICY_COOKIE], cookies[SIGNATURE_COOKIE]):
        assert not set(value) & set("+=/")  # CloudFront's alphabet: - _ ~ instead


def test_cloudfront_base64_maps_plus_equals_slash_and_refuses_other_alphabets() -> None:
    data = bytes([0xFB, 0xFF, 0xBF, 0x00])  # standard base64: "+/+/AA=="
    assert base64.b64encode(data) == b"+/+/AA=="
    assert cloudfront_b64encode(data) == "-~-~AA__"
    assert cloudfront_b64decode("-~-~AA__") == data
    with pytest.raises(CookieRefused):
        cloudfront_b64decode("+/+/AA==")
    with pytest.raises(CookieRefused):
        cloudfront_b64decode("é")


def test_valid_cookies_open_every_object_under_the_prefix_until_the_expiry(key: rsa.RSAPrivateKey, keys) -> None:
    cookies = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES).cookies
    for name in ("master.m3u8", "720p/index.m3u8", "720p/seg_00001.ts"):
        assert verify_cookies(cookies, f"{CDN}/premium/videos/{VIDEO}/{name}", NOW, keys) == EXPIRES
    assert verify_cookies(cookies, f"{CDN}/premium/videos/{VIDEO}/master.m3u8", EXPIRES - 1, keys) == EXPIRES


def _refused(cookies: dict[str, str], keys, url: str = f"{CDN}/premium/videos/{VIDEO}/master.m3u8",
             now: float = NOW, client_ip: str | None = None) -> str:
    with pytest.raises(CookieRefused) as refused:
        verify_cookies(cookies, url, now, keys, client_ip)
    return str(refused.value)


def test_another_videos_prefix_and_another_host_are_refused(key: rsa.RSAPrivateKey, keys) -> None:
    cookies = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES).cookies
    assert "resource" in _refused(cookies, keys, f"{CDN}/premium/videos/{OTHER}/master.m3u8")
    # The wildcard follows the slash: an id that merely starts with this one is not covered.
    assert "resource" in _refused(cookies, keys, f"{CDN}/premium/videos/{VIDEO}x/master.m3u8")
    assert "resource" in _refused(cookies, keys, f"https://evil.example/premium/videos/{VIDEO}/master.m3u8")
    assert "resource" in _refused(cookies, keys, f"http://cdn.example.com/premium/videos/{VIDEO}/master.m3u8")


def test_expired_cookies_are_refused(key: rsa.RSAPrivateKey, keys) -> None:
    cookies = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES).cookies
    assert "expired" in _refused(cookies, keys, now=EXPIRES)
    assert "expired" in _refused(cookies, keys, now=EXPIRES + 86400)


def test_a_tampered_policy_is_refused(key: rsa.RSAPrivateKey, keys) -> None:
    cookies = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES).cookies
    # Longer life and a wider resource, with the original signature.
    for forged_resource, forged_expiry in ((RESOURCE, EXPIRES + 10**6), (f"{CDN}/premium/*", EXPIRES)):
        policy = json.dumps({"Statement": [{"Resource": forged_resource,
                                            "Condition": {"DateLessThan": {"AWS:EpochTime": forged_expiry}}}]},
                            separators=(",", ":")).encode()
        tampered = {**cookies, POLICY_COOKIE: cloudfront_b64encode(policy)}
        assert "signature" in _refused(tampered, keys, now=EXPIRES + 1)


def test_cookies_signed_with_another_key_are_refused(keys) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = sign_cookies(forger, KEY_ID, RESOURCE, EXPIRES).cookies
    assert "signature" in _refused(forged, keys)


def test_a_wrong_key_pair_id_is_refused(key: rsa.RSAPrivateKey, keys) -> None:
    cookies = sign_cookies(key, "K_SOMEONE_ELSE", RESOURCE, EXPIRES).cookies
    assert "key pair" in _refused(cookies, keys)


@pytest.mark.parametrize("missing", COOKIE_NAMES)
def test_a_missing_cookie_is_refused(key: rsa.RSAPrivateKey, keys, missing: str) -> None:
    cookies = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES).cookies
    del cookies[missing]
    assert missing in _refused(cookies, keys)
    assert "missing" in _refused({**cookies, missing: ""}, keys)


def test_the_source_ip_range_is_enforced(key: rsa.RSAPrivateKey, keys) -> None:
    cookies = sign_cookies(key, KEY_ID, RESOURCE, EXPIRES, source_ip="203.0.113.0/24").cookies
    url = f"{CDN}/premium/videos/{VIDEO}/master.m3u8"
    assert verify_cookies(cookies, url, NOW, keys, client_ip="203.0.113.200") == EXPIRES
    assert "source IP" in _refused(cookies, keys, client_ip="198.51.100.1")
    assert "not valid" in _refused(cookies, keys, client_ip=None)


@pytest.mark.parametrize(("policy", "reason"), [
    ({"Statement": []}, "one statement"),
    ({"Statement": [{"Resource": RESOURCE, "Condition": {"DateLessThan": {"AWS:EpochTime": EXPIRES}}}] * 2},
     "one statement"),
    ({"Statement": [{"Resource": RESOURCE, "Condition": {}}]}, "DateLessThan"),
    ({"Statement": [{"Resource": RESOURCE, "Condition": {"DateLessThan": {"AWS:EpochTime": str(EXPIRES)}}}]},
     "EpochTime"),
    ({"Statement": [{"Resource": RESOURCE, "Condition": {"DateLessThan": {"AWS:EpochTime": True}}}]}, "EpochTime"),
    ({"Statement": [{"Resource": RESOURCE, "Condition": {"DateLessThan": {"AWS:EpochTime": EXPIRES},
                                                         "DateGreaterThan": {"AWS:EpochTime": NOW + 60}}}]},
     "not valid yet"),
    ({"Statement": [{"Resource": RESOURCE, "Condition": {"DateLessThan": {"AWS:EpochTime": EXPIRES},
                                                         "StringLike": {"x": "y"}}}]}, "unknown conditions"),
    ({"Statement": [{"Condition": {"DateLessThan": {"AWS:EpochTime": EXPIRES}}}]}, "resource"),
])
def test_signed_but_malformed_policies_are_refused(key: rsa.RSAPrivateKey, keys, policy: dict, reason: str) -> None:
    assert reason in _refused(_signed(key, json.dumps(policy).encode()), keys)


def test_a_signed_policy_that_is_not_json_is_refused(key: rsa.RSAPrivateKey, keys) -> None:
    assert "not JSON" in _refused(_signed(key, b"{not json"), keys)


def test_wildcards_are_cloudfronts_star_and_question_mark_only() -> None:
    assert resource_matches("https://cdn/premium/videos/a/*", "https://cdn/premium/videos/a/")
    assert resource_matches("https://cdn/seg_?.ts", "https://cdn/seg_1.ts")
    assert not resource_matches("https://cdn/seg_?.ts", "https://cdn/seg_12.ts")
    assert not resource_matches("https://cdn/a.b", "https://cdn/aXb")  # `.` is literal
    assert not resource_matches("https://cdn/[ab]", "https://cdn/a")  # no character classes
    assert not resource_matches("https://cdn/Premium/*", "https://cdn/premium/x")  # case-sensitive


@pytest.mark.parametrize(("raw", "key"), [
    (b"/videos/v/master.m3u8", "videos/v/master.m3u8"),
    (b"/premium/videos/v/720p/seg_00001.ts", "premium/videos/v/720p/seg_00001.ts"),
    (b"/", None), (b"/videos/", None), (b"/videos//x", None), (b"/videos/../uploads/x", None),
    (b"/videos/./x", None), (b"/premium%2Fvideos/v/x", None), (b"/videos/%2e%2e/x", None), (b"/.hidden", None),
    (b"/videos/v x", None), (b"videos/v", None),
])
def test_the_edge_forwards_only_plain_keys(raw: bytes, key: str | None) -> None:
    assert origin_key(raw) == key

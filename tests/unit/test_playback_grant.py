"""Playback grants (pure): free -> the public URL; premium -> entitled tokens only, cookies on the prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import ApiError
from common.settings import load_settings
from common.tokens import Principal, issue_token, verify_token
from infra.edge.cloudfront import KEY_PAIR_COOKIE, POLICY_COOKIE, cloudfront_b64decode, load_private_key, \
    verify_cookies
from producers.playback import PlaybackSigner

VIDEO = "c" * 24
NOW = 1_750_000_000.0
FREE, PREMIUM = (True, False), (True, True)
SUBSCRIBER = Principal("u1", frozenset({"premium"}))
VIEWER = Principal("u2", frozenset())


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> PlaybackSigner:
    return PlaybackSigner(load_settings(home=tmp_path_factory.mktemp("home"), cdn_base="https://cdn.example.com",
                                        playback_ttl_s=600))


def _error(call, *args) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as raised:
        call(*args)
    return raised.value


def test_a_free_video_gets_its_public_url_and_no_cookies(signer: PlaybackSigner) -> None:
    grant = signer.grant(VIEWER, VIDEO, FREE, NOW)
    assert grant.video_url == f"https://cdn.example.com/videos/{VIDEO}/master.m3u8"
    assert grant.cookies is None and grant.expires_at == NOW + 600


def test_a_premium_video_gets_cookies_for_its_prefix_only(signer: PlaybackSigner) -> None:
    grant = signer.grant(SUBSCRIBER, VIDEO, PREMIUM, NOW)
    assert grant.video_url == f"https://cdn.example.com/premium/videos/{VIDEO}/master.m3u8"
    assert grant.cookie_path == f"/premium/videos/{VIDEO}/"
    assert grant.cookies is not None and grant.cookies[KEY_PAIR_COOKIE] == "LOCALEDGEKEY"
    statement = json.loads(cloudfront_b64decode(grant.cookies[POLICY_COOKIE]))["Statement"][0]
    assert statement == {"Resource": f"https://cdn.example.com/premium/videos/{VIDEO}/*",
                         "Condition": {"DateLessThan": {"AWS:EpochTime": int(NOW) + 600}}}
    keys = {"LOCALEDGEKEY": signer.private_key.public_key()}
    assert verify_cookies(grant.cookies, grant.video_url, NOW, keys) == NOW + 600


def test_the_client_ip_binds_the_cookies_when_given(signer: PlaybackSigner) -> None:
    grant = signer.grant(SUBSCRIBER, VIDEO, PREMIUM, NOW, source_ip="192.0.2.10")
    assert grant.cookies is not None
    condition = json.loads(cloudfront_b64decode(grant.cookies[POLICY_COOKIE]))["Statement"][0]["Condition"]
    assert condition["IpAddress"] == {"AWS:SourceIp": "192.0.2.10/32"}


def test_the_premium_claim_entitles_like_the_premium_role(signer: PlaybackSigner) -> None:
    principal = verify_token("s" * 32, f"Bearer {issue_token('s' * 32, 'u3', premium=True)}")
    assert principal.premium and principal.entitled_to_premium
    assert signer.grant(principal, VIDEO, PREMIUM, NOW).cookies is not None


def test_a_non_boolean_premium_claim_is_an_invalid_token() -> None:
    import jwt

    token = jwt.encode({"sub": "u", "iat": 1, "exp": 60, "premium": "yes"}, "s" * 32, algorithm="HS256")
    assert _error(verify_token, "s" * 32, f"Bearer {token}", 30.0).code == "invalid_token"


def test_a_premium_video_without_entitlement_is_403_not_entitled(signer: PlaybackSigner) -> None:
    error = _error(signer.grant, VIEWER, VIDEO, PREMIUM, NOW)
    assert (error.status, error.code) == (403, "not_entitled")


@pytest.mark.parametrize("found", [None, (False, False), (False, True)])
def test_an_unknown_or_unpublished_video_is_404(signer: PlaybackSigner, found: tuple[bool, bool] | None) -> None:
    error = _error(signer.grant, SUBSCRIBER, VIDEO, found, NOW)
    assert (error.status, error.code, error.field) == (404, "not_found", "video_id")


def test_a_cdn_base_with_a_path_keeps_it_in_the_cookie_path(tmp_path: Path) -> None:
    signer = PlaybackSigner(load_settings(home=tmp_path, cdn_base="https://example.com/cdn/"))
    grant = signer.grant(SUBSCRIBER, VIDEO, PREMIUM, NOW)
    assert grant.cookie_path == f"/cdn/premium/videos/{VIDEO}/"
    assert grant.video_url == f"https://example.com/cdn/premium/videos/{VIDEO}/master.m3u8"


def test_a_key_that_is_not_rsa_is_refused_at_start_up() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="RSA"):
        load_private_key(pem)

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.settings import load_settings, split_host_port


def test_values_come_from_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUSTRAX_HOME", str(tmp_path))
    monkeypatch.setenv("LUSTRAX_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    monkeypatch.setenv("LUSTRAX_S3_ENDPOINT", "http://127.0.0.1:17070")
    monkeypatch.setenv("LUSTRAX_EDGE_PORT", "17080")
    settings = load_settings()
    assert settings.kafka_address == ("127.0.0.1", 19092)
    assert settings.s3_address == ("127.0.0.1", 17070)
    # Published URLs go through the edge, which reads the public bucket.
    assert settings.public_base_url == "http://127.0.0.1:17080"
    assert settings.public_origin_url == "http://127.0.0.1:17070/lustrax-public"
    assert settings.clickhouse_url == f"chdb://{tmp_path.resolve() / 'data' / 'clickhouse'}"


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUSTRAX_INGEST_PORT", "eighty")
    with pytest.raises(ConfigError, match="LUSTRAX_INGEST_PORT"):
        load_settings()


def test_production_refuses_to_start_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUSTRAX_ENV", "production")
    monkeypatch.setenv("LUSTRAX_S3_ACCESS_KEY", "key")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "LUSTRAX_S3_SECRET_KEY" in message and "LUSTRAX_JWT_SECRET" in message
    assert "LUSTRAX_CLOUDFRONT_KEY_PAIR_ID" in message and "LUSTRAX_CLOUDFRONT_PRIVATE_KEY_FILE" in message
    assert "LUSTRAX_S3_ACCESS_KEY" not in message


def test_the_cloudfront_key_is_generated_once_privately_or_read_from_its_file(tmp_path: Path) -> None:
    first = load_settings(home=tmp_path / "a")
    assert first.cloudfront_private_key_pem == load_settings(home=tmp_path / "a").cloudfront_private_key_pem
    assert first.cloudfront_private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE((tmp_path / "a" / "secrets" / "cloudfront_private_key.pem").stat().st_mode) == 0o600
    given = tmp_path / "key.pem"
    given.write_text(first.cloudfront_private_key_pem)
    settings = load_settings(home=tmp_path / "b", cloudfront_private_key_file=given, cloudfront_key_pair_id="K2ABC")
    assert (settings.cloudfront_private_key_pem, settings.cloudfront_key_id) == (first.cloudfront_private_key_pem,
                                                                                 "K2ABC")
    assert not (tmp_path / "b" / "secrets").exists()
    with pytest.raises(ConfigError, match="LUSTRAX_CLOUDFRONT_PRIVATE_KEY_FILE"):
        _ = load_settings(home=tmp_path / "c", cloudfront_private_key_file=tmp_path / "absent.pem").cloudfront_private_key_pem


def test_local_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    first = load_settings(home=tmp_path)
    second = load_settings(home=tmp_path)
    assert first.s3_credentials == second.s3_credentials
    assert first.jwt_signing_secret == second.jwt_signing_secret
    assert len(first.jwt_signing_secret) >= 32
    mode = (tmp_path / "secrets" / "jwt_secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_given_secrets_win_over_generated_ones(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, jwt_secret="given-secret", s3_access_key="a", s3_secret_key="b")
    assert settings.jwt_signing_secret == "given-secret"
    assert settings.s3_credentials == ("a", "b")
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:9092", ("127.0.0.1", 9092)), ("http://localhost:7070", ("localhost", 7070)),
     ("[::1]:9000", ("::1", 9000)), ("kafka", ("kafka", 1234))],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address, 1234) == expected

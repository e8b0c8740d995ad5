"""docker-compose.yml is valid Compose, describes every service, and publishes on loopback only."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from lustrax.services import EDGE, INFRASTRUCTURE, PROJECT_SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = ROOT / "infra" / "compose" / "compose-spec.json"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_the_validator_rejects_a_broken_compose_file() -> None:
    broken = _compose()
    broken["services"]["kafka"]["ports"] = "9092"  # must be a list
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_service_of_the_project_is_in_compose() -> None:
    services = _compose()["services"]
    assert set(INFRASTRUCTURE) | set(PROJECT_SERVICES) <= set(services)
    for name, spec in PROJECT_SERVICES.items():
        assert services[name]["build"] == "."
        assert tuple(services[name]["command"]) == spec.command


def test_the_edge_runs_from_the_image_with_the_cloudfront_key() -> None:
    services = _compose()["services"]
    edge = services[EDGE.name]
    assert edge["build"] == "." and tuple(edge["command"]) == EDGE.command
    # The edge checks premium cookies and the API signs them: both need the key, nothing else does.
    holders = {name for name, service in services.items() if "cloudfront_private_key" in service.get("secrets", [])}
    assert holders == {"edge", "ingest"}


def test_published_ports_bind_to_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("LUSTRAX_S3_SECRET_KEY", "LUSTRAX_JWT_SECRET", "LUSTRAX_CLICKHOUSE_PASSWORD",
                     "LUSTRAX_CLOUDFRONT_PRIVATE_KEY_PATH"):
        assert f"${{{variable}:?" in text  # taken from the environment, required


def test_the_gateway_publishes_its_port_on_loopback_with_a_health_check() -> None:
    gateway = _compose()["services"]["gateway"]
    assert gateway["ports"] == ["127.0.0.1:8765:8765", "127.0.0.1:8766:8766"]  # WebSocket, Socket.IO
    assert gateway["environment"]["LUSTRAX_WS_HOST"] == "0.0.0.0"
    assert all(f"http://127.0.0.1:{port}/healthz" in " ".join(gateway["healthcheck"]["test"]) for port in (8765, 8766))

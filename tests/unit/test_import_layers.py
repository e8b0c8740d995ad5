"""The import map of docs/architecture.md, checked against the code: arrows point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Which top-level package may import which (besides itself); docs/architecture.md shows the same map.
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "schemas": {"common"},
    "infra": {"common", "schemas"},
    # The catalog read model (fold, projection, feed): shared by the API and any later reader.
    "catalog": {"common", "schemas", "infra"},
    "producers": {"common", "schemas", "infra", "catalog"},
    "processors": {"common", "schemas", "infra", "catalog"},
    "gateways": {"common", "schemas", "infra", "catalog"},
    "lustrax": {"common", "schemas", "infra", "catalog", "producers", "processors", "gateways"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = {str(path.relative_to(ROOT)): sorted(_imports(path) - ALLOWED[package] - {package})
             for path in sorted((ROOT / package).rglob("*.py"))}
    assert {path: names for path, names in wrong.items() if names} == {}

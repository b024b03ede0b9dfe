"""The package's layering: imports run one way, cli -> studies -> bench -> engine -> data / models
(README, "Where the code is"); a module never imports a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xvit

ROOT = Path(xvit.__file__).parent
# each layer and the layers it must not import
FORBIDDEN = {
    "models": {"data", "engine", "bench", "studies", "cli"},
    "data": {"models", "engine", "bench", "studies", "cli"},
    "engine": {"bench", "studies", "cli"},
    "bench": {"studies", "cli"},
    "studies": {"cli"},
}


def imported_layers(path: Path) -> set[str]:
    """The ``xvit.<layer>`` packages that a module imports (at any depth, lazily or not)."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        layers |= {n.split(".")[1] for n in names if n.startswith("xvit.") and n.count(".") >= 1}
    return layers


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_run_one_way(layer):
    bad = {
        str(p.relative_to(ROOT)): sorted(imported_layers(p) & FORBIDDEN[layer]) for p in (ROOT / layer).rglob("*.py")
    }
    assert {k: v for k, v in bad.items() if v} == {}

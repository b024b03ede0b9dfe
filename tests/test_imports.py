"""The package's layering: imports run one way, cli -> studies -> bench -> engine -> data / models
(README, "Where the code is"); a module never imports a layer above its own. Inside the engine the
rooms run train -> eval -> floor and deploy -> eval -> floor (docs/architecture.md). No module
imports itself back through others, counting the imports inside functions."""

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
# each engine room (a module directly in engine/ is the floor) and the rooms it must not import
ROOMS_FORBIDDEN = {
    "floor": {"train", "eval", "deploy"},
    "eval": {"train", "deploy"},
    "deploy": {"train"},
    "train": {"deploy"},
}


def module_name(path: Path) -> str:
    name = ".".join(("xvit", *path.relative_to(ROOT).with_suffix("").parts))
    return name.removesuffix(".__init__")


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """The ``xvit`` modules a module imports, at any depth (inside functions too): for
    ``from xvit.a import b`` the module ``xvit.a.b`` if there is one, else ``xvit.a``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("xvit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("xvit"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


def imported_layers(path: Path) -> set[str]:
    """The ``xvit.<layer>`` packages that a module imports (at any depth, lazily or not)."""
    return {m.split(".")[1] for m in imported_modules(path) if m.count(".") >= 1}


def room(module: str) -> str | None:
    """``train`` / ``eval`` / ``deploy`` for a module of an engine room, ``floor`` for one directly in engine/."""
    parts = module.split(".")
    if parts[:2] != ["xvit", "engine"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in ROOMS_FORBIDDEN else "floor"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_run_one_way(layer):
    bad = {
        str(p.relative_to(ROOT)): sorted(imported_layers(p) & FORBIDDEN[layer]) for p in (ROOT / layer).rglob("*.py")
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_engine_rooms_run_one_way():
    bad = {}
    for name, path in MODULES.items():
        own = room(name)
        if own is None:
            continue
        wrong = sorted(m for m in imported_modules(path) if room(m) in ROOMS_FORBIDDEN[own])
        if wrong:
            bad[name] = wrong
    assert bad == {}
    assert {room(m) for m in MODULES} >= {"floor", "train", "eval", "deploy"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports), as the modules along it; None if none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_counting_function_level_imports(tmp_path):
    graph = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
    assert find_cycle(graph) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the search finds one
    lazy = tmp_path / "lazy.py"  # an import inside a function counts as one at the top
    lazy.write_text("def f():\n    from xvit.data import video\n    import xvit.engine.checkpoint\n")
    assert imported_modules(lazy) == {"xvit.data.video", "xvit.engine.checkpoint"}

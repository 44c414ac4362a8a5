"""The package layout: no import cycle anywhere in ``edgeml/`` (function-level imports
included); the decision core imports neither torch, gymnasium, SB3 nor gRPC at module level
(a function may, for an optional capability such as reading an SB3 zip) and nothing of the
packages above it (ARCHITECTURE.md: everything imports downward)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PKG = Path(__file__).resolve().parents[1] / "edgeml"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> nx.DiGraph:
    g = nx.DiGraph()
    mods = {_module(p): p for p in PKG.rglob("*.py") if "proto" not in p.parts}
    for name, path in mods.items():
        g.add_node(name)
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in mods and t != name and not name.startswith(t + "."):
                    g.add_edge(name, t)
    return g


def test_no_import_cycle_in_the_package() -> None:
    cycles = list(nx.simple_cycles(_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:10])


@pytest.mark.parametrize("forbidden", ["torch", "gymnasium", "stable_baselines3", "grpc"])
def test_decision_core_is_light(forbidden: str) -> None:
    for path in (PKG / "decision").rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            for n in names:
                top = n.split(".")[0]
                if id(node) in top_level:
                    assert top != forbidden, f"{path.name} imports {n}"
                assert not n.startswith(("edgeml.runtime", "edgeml.transport", "edgeml.cli")), (
                    f"{path.name} imports {n} (the core must not import upward)"
                )


def test_runtime_modules_stay_small() -> None:
    """ARCHITECTURE/#14: the runtime is split by concern, no module over about 300 lines."""
    big = {
        p.name: n
        for p in (PKG / "runtime").glob("*.py")
        if (n := len(p.read_text().splitlines())) > 310
    }
    assert not big, f"runtime modules over ~300 lines: {big}"

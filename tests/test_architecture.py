"""The package's layering, checked on the source with ``ast``: no import circle between modules and
no module importing another module's private (underscored) name. Function-level imports count too:
a lazy import still ties the two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "avatar_bridge"
TESTS = Path(__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, name: str, known: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import of a package module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.append((alias.name, "", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, path.name == "__init__.py", node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    found.append((submodule, "", node.lineno))
                elif base in known:
                    found.append((base, alias.name, node.lineno))
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _, _ in imports_of(path, name, known):
            # importing a submodule runs its package's __init__, which is not a dependency circle
            if target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_circle_and_a_private_import():
    """The checks below can fail: a made-up graph with a circle is caught."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("from .record import _ChunkReader")
    node = tree.body[0]
    assert resolve("avatar_bridge.playback", False, node) == "avatar_bridge.record"


def test_no_import_circle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("root", [PACKAGE, TESTS], ids=["package", "tests"])
def test_no_module_imports_another_modules_private_name(root):
    known = modules()
    offenders = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path) if root == PACKAGE else f"tests.{path.stem}"
        for target, imported, line in imports_of(path, name, known):
            if imported.startswith("_") and not imported.startswith("__") and target != name:
                offenders.append(f"{path.relative_to(root.parent)}:{line} imports {target}.{imported}")
    assert not offenders, "\n".join(offenders)


def test_engine_does_not_import_the_shell():
    """Stages, pipeline and outputs never reach up into the command-line shell."""
    graph = import_graph()
    engine = [m for m in graph if not m.startswith(("avatar_bridge.commands", "avatar_bridge.bench", "avatar_bridge.cli",
                                                   "avatar_bridge.__main__"))]
    offenders = {m: sorted(t for t in graph[m] if t.startswith("avatar_bridge.commands")) for m in engine}
    assert not {m: t for m, t in offenders.items() if t}

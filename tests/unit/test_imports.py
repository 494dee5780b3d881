"""The package's modules import each other without cycles (the layers stay layers)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "topic_sync"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in it (function bodies too)."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                module = known(target)
                if module and module != name:
                    graph[name].add(module)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_never_imports_the_cli() -> None:
    graph = _graph()
    for name, targets in graph.items():
        if not name.startswith("topic_sync.cli"):
            assert not any(t.startswith("topic_sync.cli") for t in targets), name


def test_the_core_never_reads_the_environment_or_prints() -> None:
    # Only the CLI reads os.environ and writes to the terminal; the rest takes an Io.
    for name, path in _modules().items():
        if name.startswith("topic_sync.cli") or name.startswith("topic_sync.emulator"):
            continue
        tree = ast.parse(path.read_text())
        reads = [
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and n.value.id == "os"
            and n.attr in ("environ", "getenv", "environb")
        ]
        assert reads == [], name
        calls = [
            n.func.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        ]
        assert "print" not in calls, name


def test_below_the_application_layer_nothing_reads_the_settings_table() -> None:
    # Defaults are applied once, when settings are resolved: the engine and the adapters get
    # plain values, so none of them imports the configuration package (table, file, resolver).
    graph = _graph()
    above = ("topic_sync.cli", "topic_sync.app", "topic_sync.config")
    readers = {
        name
        for name, targets in graph.items()
        if not name.startswith(above) and any(t.startswith("topic_sync.config") for t in targets)
    }
    assert readers == set()
    # ...while the application layer does (the check sees such imports).
    assert any(t.startswith("topic_sync.config") for t in graph["topic_sync.app.commands"])

"""The package's modules import each other without cycles, and only along the allowed layer
edges (the layers stay layers: no arrow runs sideways or back up)."""

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


# --- the allowed layer edges --------------------------------------------------------------

# Every module belongs to the layer of the longest prefix here that names it. A few modules
# are layers of their own because everyone may read them: the engine's shared types and
# FCM's own limits. `config` and `redact` are the rooms the configuration is moving into.
LAYERS = (
    "topic_sync",  # the package's face: its version
    "topic_sync.cli",
    "topic_sync.app",
    "topic_sync.engine",
    "topic_sync.engine.types",
    "topic_sync.inputs",
    "topic_sync.fcm",
    "topic_sync.fcm.wire",
    "topic_sync.store",
    "topic_sync.emulator",
    "topic_sync.config",
    "topic_sync.redact",
    "topic_sync.dates",
    "topic_sync.pool",
    "topic_sync.states",
    "topic_sync.errors",
)

# The foundation every layer may import: states, errors, dates and the redaction helpers.
# The configuration (`config`) is read only by the CLI and the application layer: they hand
# everything below plain values.
_BASE = {"states", "errors", "redact", "dates"}

ALLOWED = {
    "topic_sync": set(),
    # The CLI parses and renders over the application layer; it shows the engine's progress.
    "cli": {"topic_sync", "app", "config", "engine.types", "emulator", "pool", "fcm.wire", *_BASE},
    "app": {"config", "engine", "engine.types", "inputs", "fcm", "fcm.wire", "store", "emulator"}
    | {"pool"}
    | _BASE,
    "engine": {"engine.types", "inputs", "fcm", "fcm.wire", "store", "pool", *_BASE},
    "engine.types": {"fcm", "states"},
    # The three adapters (files, FCM, PostgreSQL) never import each other.
    "inputs": {"pool", "fcm.wire", *_BASE},
    "fcm": {"fcm.wire", *_BASE},
    "fcm.wire": set(),
    "store": {"states", "errors"},
    "emulator": set(),  # a stand-in for FCM: nothing of the client it tests
    "config": {"fcm", "inputs", "store", "pool", "fcm.wire", *_BASE},
    "redact": set(),
    "dates": set(),
    "pool": {"fcm.wire", "dates", "errors"},
    "states": set(),
    "errors": set(),
}

# Arrows that still run sideways, each with the change that removes it. A test fails when
# one is gone, so the list only shrinks.
KNOWN_SIDEWAYS = {
    ("cli", "engine"): "the CLI renders the repair's result type (engine.reconcile)",
}


def _layer(module: str) -> str | None:
    found = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return None if found == "topic_sync" and module != "topic_sync" else found


def _layer_name(prefix: str) -> str:
    return prefix.removeprefix("topic_sync.") if prefix != "topic_sync" else prefix


def _edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], set[str]]:
    """(importing layer, imported layer) -> the module arrows behind it."""
    edges: dict[tuple[str, str], set[str]] = {}
    for name, targets in graph.items():
        source = _layer(name)
        assert source is not None, f"{name} is in no layer: add its package to LAYERS"
        for target in targets:
            layer = _layer(target)
            assert layer is not None, f"{target} is in no layer: add its package to LAYERS"
            if layer != source:
                pair = (_layer_name(source), _layer_name(layer))
                edges.setdefault(pair, set()).add(f"{name} -> {target}")
    return edges


def _sideways(edges: dict[tuple[str, str], set[str]]) -> list[str]:
    return sorted(
        arrow
        for (source, target), arrows in edges.items()
        if target not in ALLOWED[source] and (source, target) not in KNOWN_SIDEWAYS
        for arrow in arrows
    )


def test_every_layer_is_in_the_allowed_list() -> None:
    assert sorted(ALLOWED) == sorted(_layer_name(p) for p in LAYERS)
    assert all(t in ALLOWED for targets in ALLOWED.values() for t in targets)
    assert all(s in ALLOWED and t in ALLOWED for s, t in KNOWN_SIDEWAYS)


def test_no_import_runs_outside_the_allowed_layer_edges() -> None:
    assert _sideways(_edges(_graph())) == []


def test_every_known_sideways_arrow_still_exists() -> None:
    # Once the change that removes one has landed, take it off the list.
    edges = _edges(_graph())
    assert sorted(pair for pair in KNOWN_SIDEWAYS if pair not in edges) == []


def test_a_sideways_import_fails() -> None:
    graph = {
        "topic_sync.store.runs": {"topic_sync.fcm.client", "topic_sync.states"},
        "topic_sync.fcm.client": {"topic_sync.fcm.wire"},
        "topic_sync.engine.run": {"topic_sync.engine.types", "topic_sync.store.runs"},
    }
    assert _sideways(_edges(graph)) == ["topic_sync.store.runs -> topic_sync.fcm.client"]


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

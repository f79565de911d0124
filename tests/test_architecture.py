"""Imports flow one way: no import cycle anywhere in the package (harness, harness.checks, harness.suites).

Every import is counted, at module level and inside functions (a function-level import that
closes a cycle is still a cycle, only hidden until the function runs); `if TYPE_CHECKING:`
blocks are not imports. `from pkg import name` is an edge to `pkg.name` when that is a module,
else to `pkg`; importing a module's parent packages is implicit and not counted.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"harness": ROOT / "harness", "harness.checks": ROOT / "checks", "harness.suites": ROOT / "suites"}


def modules() -> dict:
    """module name -> file, for every module of the package (its installed names)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _is_type_checking(node) -> bool:
    test = node.test
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _imports(tree):
    """Import nodes anywhere in the tree, except under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def edges(known: dict) -> dict:
    """module -> {(imported module, line)} for imports of our own modules."""
    graph = {}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        out = graph.setdefault(name, set())
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the module's own package upwards
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[:len(package) - (node.level - 1)]
                    base = ".".join(package + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                while target and target not in known:  # `import harness.fit.x` -> the deepest module we have
                    target = target.rpartition(".")[0]
                if target and target != name:
                    out.add((target, node.lineno))
    return graph


def cycles(graph: dict) -> list:
    """One cycle (a list of modules, first == last) per strongly connected group of modules (Tarjan)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, group) for group in groups]


def _one_cycle(graph: dict, group: set) -> list:
    """A shortest cycle through the group's first module (breadth-first inside the group)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w, _ in sorted(graph[v]):
                if w == start:
                    return paths[v] + [start]
                if w in group and w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    return [start]


def describe(graph: dict, cycle: list) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        line = min(n for t, n in graph[a] if t == b)
        steps.append(f"{a} (line {line})")
    return " -> ".join(steps + [cycle[-1]])


def test_the_scan_sees_the_package():
    known = modules()
    graph = edges(known)
    assert {"harness.recipe", "harness.checks.registry", "harness.suites.plugin"} <= set(known)
    assert any(t == "harness.checks.registry" for t, _ in graph["harness.checks.result"])


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {("b", 1)}, "b": {("c", 2)}, "c": {("a", 3)}, "d": {("a", 4)}}
    found = cycles(graph)
    assert len(found) == 1 and found[0][0] == found[0][-1] == "a" and set(found[0]) == {"a", "b", "c"}
    assert describe(graph, found[0]) == "a (line 1) -> b (line 2) -> c (line 3) -> a"


def test_no_import_cycles():
    graph = edges(modules())
    found = [describe(graph, c) for c in cycles(graph)]
    assert not found, "import cycles (each: module (line of the import) -> ...):\n  " + "\n  ".join(found)

"""The package's layers, checked on its import graph (function-level imports included).

    utils                                   (0)
    geometry, models, schedulers            (1)
    pipelines                               (2)
    perf, distributed, training, evaluation, data, builtin, serve   (3)
    cli                                     (4)
    kumovideo (the package's lazy facade)   (5)

Nothing imports a higher layer; no two modules, and no two packages, import each other
(directly or round a longer loop); no module takes another package's private (`_name`)
names. docs/architecture.md ("Where a change goes") says which layer a change belongs to.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "kumovideo"

LAYERS = {
    "kumovideo.utils": 0,
    "kumovideo.geometry": 1,
    "kumovideo.models": 1,
    "kumovideo.schedulers": 1,
    "kumovideo.pipelines": 2,
    "kumovideo.perf": 3,
    "kumovideo.distributed": 3,
    "kumovideo.training": 3,
    "kumovideo.evaluation": 3,
    "kumovideo.data": 3,
    "kumovideo.builtin": 3,
    "kumovideo.serve": 3,
    "kumovideo.cli": 4,
    "kumovideo": 5,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def package_of(module: str) -> str:
    """The layer unit a module belongs to: kumovideo.<first part>, or the root."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every kumovideo import of `module`,
    wherever it stands (top level, function, TYPE_CHECKING); lazy-export tables and literal
    importlib.import_module calls count as imports."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, path.name == "__init__.py", node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, None, node.lineno))
        elif isinstance(node, ast.Dict) and "lazy_exports" in path.read_text():
            for value in node.values:
                if isinstance(value, ast.Constant) and value.value in MODULES:
                    found.append((value.value, None, node.lineno))
    return [
        _through_facade(m, name, line) for m, name, line in found if m == "kumovideo" or m.startswith("kumovideo.")
    ]


def _facade_exports() -> dict[str, str]:
    tree = ast.parse((ROOT / "__init__.py").read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "_EXPORTS")
    return {k.value: v.value for k, v in zip(table.keys, table.values)}


def _through_facade(module: str, name: str | None, line: int) -> tuple[str, str | None, int]:
    """`from kumovideo import X` imports X's own module (the root loads it lazily); the root
    itself (for `__version__`) is imported by every import of the package anyway."""
    if module == "kumovideo" and name is not None:
        return _facade_exports().get(name, "kumovideo.utils"), name, line
    return module, name, line


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_package_has_a_layer():
    assert {package_of(m) for m in MODULES} <= set(LAYERS), "a new package: give it a layer in LAYERS"


def test_nothing_imports_upwards():
    upward = [
        f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {target} "
        f"(layer {LAYERS[package_of(target)]} above {LAYERS[package_of(m)]})"
        for m, edges in GRAPH.items()
        for target, _, line in edges
        if LAYERS[package_of(target)] > LAYERS[package_of(m)]
    ]
    assert not upward, "\n".join(upward)


def test_no_private_names_across_packages():
    private = [
        f"{MODULES[m].relative_to(ROOT.parent)}:{line} takes {target}.{name}"
        for m, edges in GRAPH.items()
        for target, name, line in edges
        if name and name.startswith("_") and not name.startswith("__") and package_of(target) != package_of(m)
    ]
    assert not private, "\n".join(private)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _owner(target: str) -> str:
    """The module an import edge lands on (a package's __init__ for `from pkg import name`)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def test_no_module_cycles():
    # A package's __init__ re-exporting its submodules is not a cycle with them.
    edges = {
        m: {_owner(t) for t, _, _ in es if _owner(t) != m and not _owner(t).startswith(m + ".")}
        for m, es in GRAPH.items()
    }
    assert not _cycles(edges), "import cycles: " + "; ".join(" <-> ".join(c) for c in _cycles(edges))


def test_no_package_cycles():
    edges: dict[str, set[str]] = {}
    for m, es in GRAPH.items():
        for t, _, _ in es:
            if package_of(t) != package_of(m) and package_of(t) != "kumovideo":
                edges.setdefault(package_of(m), set()).add(package_of(t))
    assert not _cycles(edges), "package cycles: " + "; ".join(" <-> ".join(c) for c in _cycles(edges))


@pytest.mark.parametrize(
    "source, expected",
    [
        # The checker itself: an upward import and a loop are seen, function-level too.
        ("def f():\n    from kumovideo.cli import main\n", "kumovideo.cli"),
        ("from ..pipelines import loading\n", "kumovideo.pipelines.loading"),
    ],
)
def test_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch, source, expected):
    path = ROOT / "models" / "_layering_probe.py"
    monkeypatch.setitem(MODULES, "kumovideo.models._layering_probe", path)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == path else _read(self))
    assert [t for t, _, _ in imports_of("kumovideo.models._layering_probe")] == [expected]


_read = Path.read_text


def test_cycle_finder():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []

"""The package's shape, read from its source with ``ast`` (nothing is imported): no import cycles, declared
dependencies equal imported ones, no module over 500 lines, no function looked up through ``globals()``."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "anchorlens"
MAX_LINES = 500

#: Distributions whose import name is not their name with "-" as "_".
IMPORT_NAMES = {"scikit-learn": "sklearn", "transformer-lens": "transformer_lens"}
#: Declared but never imported by anchorlens, on purpose.
NOT_IMPORTED = {
    # transformers' GGUF loader imports it to dequantize the offline SmolLM2 (anchorlens.core.offline).
    "gguf",
}


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _lazy_mirror(module: ast.Module) -> set[int]:
    """Ids of the nodes of a lazy package's ``if TYPE_CHECKING:`` block: in a package ``__init__`` with a
    ``_LAZY`` table it only mirrors that table (strings, imported on first use) for type checkers."""
    targets = [
        t
        for node in module.body
        for t in (node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)])
    ]
    has_table = any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets)
    if not has_table:
        return set()
    return {
        id(inner)
        for node in module.body
        if isinstance(node, ast.If) and _is_type_checking(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }


def imported_names(name: str) -> Iterator[str]:
    """Every module name ``name`` imports, at module level or inside functions, absolute: ``import a.b`` gives
    ``a.b``; ``from a import b`` gives ``a.b`` (which :func:`internal_imports` reduces to ``a`` when ``b`` is
    not a module)."""
    path = modules()[name]
    module = tree(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = _lazy_mirror(module) if path.name == "__init__.py" else set()
    for node in ast.walk(module):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..y import z
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def internal_imports(name: str) -> set[str]:
    """The package modules ``name`` imports (each target reduced to the longest prefix that is a module)."""
    out = set()
    for target in imported_names(name):
        while target and target not in modules():
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    return {name: internal_imports(name) for name in modules()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component with more than one module (or a module
    importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in {component}")  # pragma: no cover - a component always has one


def test_import_graph_resolves_submodules_and_relative_imports() -> None:
    graph = import_graph()
    assert "anchorlens.core.prompts" in graph["anchorlens.core.batch"]
    assert "anchorlens.errors" in graph["anchorlens.core.models"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in anchorlens:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _distribution(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def declared_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {_distribution(r) for r in project["dependencies"]}


def third_party_imports() -> set[str]:
    """Top-level names of everything the package imports that is neither itself nor the standard library
    (imports inside functions and under ``TYPE_CHECKING`` count)."""
    tops = {target.partition(".")[0] for name in modules() for target in imported_names(name)}
    return {t for t in tops if t and t != "anchorlens" and t not in sys.stdlib_module_names}


def test_declared_dependencies_are_the_imported_ones() -> None:
    declared = declared_dependencies()
    assert declared >= NOT_IMPORTED, f"NOT_IMPORTED lists undeclared {NOT_IMPORTED - declared}"
    expected = {IMPORT_NAMES.get(d, d.replace("-", "_")) for d in declared - NOT_IMPORTED}
    imported = third_party_imports()
    assert imported == expected, (
        f"imported but not declared in pyproject.toml: {sorted(imported - expected)}; "
        f"declared but never imported: {sorted(expected - imported)}"
    )


def test_no_module_over_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def globals_lookups(module: ast.Module) -> list[int]:
    """Lines where ``globals()`` is read from: anything but ``globals()[name] = value`` or handing the
    namespace to a function (as the lazy packages hand it to ``lazy_exports`` to fill)."""
    parents = {id(child): node for node in ast.walk(module) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(module):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "globals"):
            continue
        parent = parents.get(id(node))
        if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store):
            continue
        if isinstance(parent, ast.Call) and node in parent.args:
            continue
        lines.append(node.lineno)
    return lines


def test_globals_lookup_rule() -> None:
    def found(source: str) -> list[int]:
        return globals_lookups(ast.parse(source))

    assert found("fn = globals()[f'_{name}_run']") == [1]
    assert found("here = globals()\nfn = here['x']") == [1]
    assert found("fn = globals().get('x')") == [1]
    assert found("globals()['x'] = 1\nf(__name__, globals())") == []


def test_no_function_looked_up_through_globals() -> None:
    used = {
        f"{path.relative_to(ROOT)}:{line}"
        for path in modules().values()
        for line in globals_lookups(tree(path))
    }
    assert not used, f"globals() read (look the function up by an explicit table instead): {sorted(used)}"

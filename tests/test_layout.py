"""The package's shape: no import cycle, nothing imports upward, no private name used outside its module,
no module over ~400 lines. Imports are read from the source (those inside functions too) with ast."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "negmine"

# Lower layers never import higher ones; a layer may import its own and lower layers.
LAYERS = [
    {"negmine", "negmine.errors", "negmine.schemas", "negmine.io", "negmine.names", "negmine.progress", "negmine.teachers"},
    {"negmine.rundir"},
    {"negmine.ingest", "negmine.retrieve", "negmine.sample", "negmine.rescore", "negmine.cluster", "negmine.duplicates",
     "negmine.fn_features", "negmine.fn_model", "negmine.estimate_fn", "negmine.train", "negmine.export", "negmine.report", "negmine.sql"},
    {"negmine.engines"},
    {"negmine.runners", "negmine.summary"},
    {"negmine.recipes"},
    {"negmine.api", "negmine.compat"},
    {"negmine.cli"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if module in names or any(module.startswith(n + ".") for n in names if n != "negmine"):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py")


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) of every negmine import in ``module``."""
    found = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("negmine"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in MODULES:  # from negmine.retrieve import bm25
                    found.append((sub, [], node.lineno))
                else:
                    found.append((node.module, [alias.name], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("negmine")]
    return [(target, names, line) for target, names, line in found if target in MODULES]


def graph() -> dict[str, set[str]]:
    edges = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _ in imports(module):
            if target != module and not module.startswith(target + ".") and target != "negmine":  # a package's own __init__ is not an edge
                edges[module].add(target)
    return edges


def test_no_import_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_upward():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)}), line {line}"
              for m in MODULES for t, _, line in imports(m) if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_private_name_is_used_outside_its_module():
    crossing = [f"{m}:{line} takes {name} from {t}" for m in MODULES for t, names, line in imports(m) for name in names
                if name.startswith("_") and not name.startswith("__") and t != m]
    assert not crossing, "\n".join(crossing)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= 420, f"{MODULES[module]}: {lines} lines"

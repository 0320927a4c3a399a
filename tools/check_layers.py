"""Checks the package's shape, so anyone can rerun it (``python tools/check_layers.py``; the tests run
it too, tests/test_layers.py):

1. no import cycle among segdeploy's modules, counting every import (those inside functions too),
   the registry's by-name imports of the families, and the package ``__init__`` an import runs;
2. no module imports from a layer above its own (LAYERS, lowest first);
3. a family imports no other family;
4. outside ``segdeploy/families/`` and ``segdeploy/registry.py``, no code names a family or a variant
   (string constants, docstrings included).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "segdeploy"

# Lowest first; a module's layer is the first prefix it starts with (a package's children included).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("segdeploy.errors", "segdeploy.forms", "segdeploy.contract", "segdeploy.graph_io", "segdeploy.version", "segdeploy.limits"),
    ("segdeploy.model",),  # shared building blocks
    ("segdeploy.prompts", "segdeploy.cases", "segdeploy.weights"),  # what every family's folder builds on
    ("segdeploy.families",),  # one folder per family, and the interface
    ("segdeploy.registry",),  # names -> families
    ("segdeploy.graph_passes", "segdeploy.graph_branches", "segdeploy.attention_op", "segdeploy.flops", "segdeploy.compare",
     "segdeploy.provenance", "segdeploy.info", "segdeploy.export", "segdeploy.rewrites", "segdeploy.floor"),
    ("segdeploy.runners", "segdeploy.aoti", "segdeploy.tensorrt"),  # backends
    ("segdeploy.runtime", "segdeploy.verify", "segdeploy.bench"),
    ("segdeploy.serving", "segdeploy.client"),
    ("segdeploy.cli", "segdeploy.__main__", "segdeploy"),  # the CLI, and the package's lazy facade
)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool  # inside a function


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _registry_family_names(tree: ast.Module) -> tuple[str, ...]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FAMILY_NAMES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def import_edges(modules: dict[str, Path]) -> list[Edge]:
    """Every import of one segdeploy module by another, resolved to modules, plus the ancestor
    packages (their ``__init__`` runs) that do not contain the importer."""
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        lazy_lines = {id(inner) for f in functions for inner in ast.walk(f)}
        targets: list[tuple[str, int, bool]] = []
        for node in ast.walk(tree):
            lazy = id(node) in lazy_lines
            if isinstance(node, ast.Import):
                targets += [(alias.name, node.lineno, lazy) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    targets.append((child if child in modules else base, node.lineno, lazy))
        if name == "segdeploy.registry":  # importlib.import_module(f"segdeploy.families.{name}")
            targets += [(f"segdeploy.families.{family}", 0, True) for family in _registry_family_names(tree)]
        for target, line, lazy in targets:
            if not target.startswith("segdeploy"):
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            chain = target.split(".")
            for depth in range(1, len(chain) + 1):
                hop = ".".join(chain[:depth])
                inside = name == hop or name.startswith(hop + ".")
                if hop != target and inside:
                    continue  # the importer's own package is already running
                if hop != name:
                    edges.append(Edge(name, hop, line, lazy))
    return edges


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
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

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "segdeploy"):
            return rank
    if module == "segdeploy":
        return len(LAYERS) - 1
    raise KeyError(f"{module} is in no layer of tools/check_layers.py")


def upward_imports(edges: Iterable[Edge]) -> list[str]:
    return [
        f"{e.source}:{e.line} imports {e.target}{' (lazily)' if e.lazy else ''}, a layer above it"
        for e in edges if layer_of(e.target) > layer_of(e.source)
    ]


def cross_family_imports(edges: Iterable[Edge]) -> list[str]:
    def family(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "families" and parts[2] != "base" else None

    return [
        f"{e.source}:{e.line} imports {e.target}: a family imports no other family"
        for e in edges if family(e.source) and family(e.target) and family(e.source) != family(e.target)
    ]


def family_words(modules: dict[str, Path]) -> set[str]:
    """Every family name and variant name, read from the registry and the families' contracts."""
    words = set(_registry_family_names(ast.parse(modules["segdeploy.registry"].read_text())))
    for name, path in modules.items():
        if name.startswith("segdeploy.families.") and name.endswith(".contract"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("VARIANT_NAMES", "DEFAULT_VARIANT") for t in node.targets):
                    try:
                        value = ast.literal_eval(node.value)
                    except ValueError:  # built by a comprehension: evaluate the module's constant
                        value = _evaluated(name, node)
                    words |= {value} if isinstance(value, str) else set(value)
    return words


def _evaluated(module: str, node: ast.Assign) -> tuple[str, ...]:
    import importlib

    target = next(t.id for t in node.targets if isinstance(t, ast.Name))
    sys.path.insert(0, str(ROOT))
    return getattr(importlib.import_module(module), target)


def family_mentions(modules: dict[str, Path]) -> list[str]:
    """String constants naming a family or a variant outside families/ and the registry."""
    words = family_words(modules)
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")(?![\w])")
    found = []
    for name, path in modules.items():
        if name.startswith("segdeploy.families") or name == "segdeploy.registry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = pattern.search(node.value)
                if match:
                    found.append(f"{name}:{node.lineno} names {match.group(1)!r}")
    return found


def problems() -> dict[str, list[str]]:
    modules = module_files()
    edges = import_edges(modules)
    return {
        "import cycles": [" -> ".join(c) for c in cycles(edges)],
        "upward imports": upward_imports(edges),
        "cross-family imports": cross_family_imports(edges),
        "family names outside families/ and the registry": family_mentions(modules),
    }


def main() -> int:
    found = problems()
    for title, items in found.items():
        print(f"{title}: {len(items)}")
        for item in items:
            print(f"  {item}")
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

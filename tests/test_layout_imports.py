"""The package layout: the core needs only torch and numpy, and its modules form no cycle.

The core is ``bls`` without ``bls.app`` (the command line, the training engine, the small
models and the data loaders). The application imports the core, never the other way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

from _fresh import run_fresh

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "bls"
APP = "bls.app"
# Optional packages the application uses; importing the core must not try any of them.
HEAVY = ("sklearn", "matplotlib", "tqdm", "PIL")
# Cycles between core modules that are tolerated, as sets of module names: none.
KNOWN_CYCLES: list[set[str]] = []

# Run in a fresh interpreter: the test process has long imported the application. torch itself
# tries tqdm (torch.hub uses it when installed), so every import of a HEAVY package is blocked
# and recorded, and only the attempts made while the core is imported count.
PROBE = r"""
import importlib.abc, json, sys

HEAVY = {heavy!r}
attempts = []
phase = ["torch"]


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in HEAVY:
            attempts.append((phase[0], fullname))
            raise ModuleNotFoundError(f"blocked by the test: {{fullname}}", name=fullname)
        return None


sys.meta_path.insert(0, Block())
import numpy, torch, torch.utils.data, torch.distributed

phase[0] = "bls"
import bls, bls.methods, bls.handler, bls.diagnostics

print(json.dumps({{
    "attempted": [name for when, name in attempts if when == "bls"],
    "imported": sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY
                       and sys.modules[m] is not None),
    "app": sorted(m for m in sys.modules if m == "{app}" or m.startswith("{app}.")),
}}))
"""


def test_importing_the_core_needs_neither_the_app_nor_optional_packages() -> None:
    found = run_fresh(PROBE.format(heavy=HEAVY, app=APP), timeout=120)
    assert not any(m.startswith(APP) for m in found["app"]), found["app"]
    assert found["attempted"] == [], f"the core tried to import {found['attempted']}"
    assert found["imported"] == [], found["imported"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The ``bls`` modules ``path`` imports anywhere in it (also inside functions and
    ``TYPE_CHECKING`` blocks: a cycle there is one refactoring away from a real one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # ``from bls import diagnostics`` imports the module bls.diagnostics.
            submodules = {f"{source}.{alias.name}" for alias in node.names}
            found.update(submodules & modules)
            if not submodules <= modules:
                found.add(source)
    return {name for name in found if name in modules and name != module}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, name, modules) for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node] & graph.keys()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _core(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without the application: ``bls.app`` and ``bls/__main__.py``, which only
    ``python -m bls`` runs (it starts the app's command line; ``import bls`` never loads it)."""
    app = {name for name in graph if name.startswith(APP + ".") or name in (APP, "bls.__main__")}
    return {name: deps for name, deps in graph.items() if name not in app}


def test_the_core_never_imports_the_app() -> None:
    core = _core(_graph())
    offenders = {name: sorted(deps - set(core)) for name, deps in core.items() if deps - set(core)}
    assert offenders == {}, f"core modules importing {APP}: {offenders}"


def test_core_modules_import_no_cycle() -> None:
    core = _core(_graph())
    cycles = [sorted(cycle) for cycle in _cycles(core) if cycle not in KNOWN_CYCLES]
    assert cycles == [], f"core modules importing each other: {cycles}"


def test_the_graph_sees_imports() -> None:
    # Guards the two tests above against a graph that silently finds nothing.
    graph = _graph()
    assert "bls.handler" in graph["bls.methods"]
    assert "bls.diagnostics" in graph["bls"]  # from bls import diagnostics
    assert {"bls.app.train", "bls.methods"} <= graph["bls.app.cli"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]

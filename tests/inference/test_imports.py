"""The runtime's import structure: no import cycle among its modules, no private name taken
from another module, and nothing that pulls in the training code or the CLI.

Read from the source with ``ast`` (function-level imports included), so an import that
only runs on some path counts as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "inference"
FORBIDDEN = ("training", "cargoscan")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def _project_module(name: str) -> str | None:
    """The module of ``inference`` that ``name`` is or lies in (None: outside it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for base, names, _ in _imports(module):
            # ``from pkg import mod`` depends on pkg.mod, ``from mod import name`` on mod.
            for target in [base, *(f"{base}.{n}" for n in names)]:
                found = _project_module(target)
                if found is not None and found != module:
                    graph[module].add(found)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_the_walk_sees_the_package() -> None:
    """The checks below are only worth something if they see the modules and their imports."""
    graph = _graph()
    assert {"inference.scan", "inference.service.app", "inference.service.core"} <= set(graph)
    assert "inference.service.core" in graph["inference.service.app"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_name_from_another_module() -> None:
    """What one module takes from another is part of that module's public face."""
    taken = [
        f"{module}:{line} takes {name} from {base}"
        for module in MODULES
        for base, names, line in _imports(module)
        if base.split(".")[0] == "inference"
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not taken, "\n".join(taken)


def test_runtime_imports_no_training_or_cli() -> None:
    """The runtime stays torch-free and usable without the CLI on top of it."""
    bad = [
        f"{module}:{line} imports {base}"
        for module in MODULES
        for base, _, line in _imports(module)
        if base.split(".")[0] in FORBIDDEN
    ]
    assert not bad, "\n".join(bad)

"""The package's layout follows the data's path: no import cycles, and each layer imports only those below it.

Read from the source's AST, imports inside functions and under `TYPE_CHECKING` included: a cycle hidden in a
function is still a cycle in the design (DESIGN.md, "Layout").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lstm_trading"

# What each top-level part may import (besides itself): `cli` -> `runs` -> stages -> `data` -> `core`.
STAGES_BELOW_MODELS = {"core", "data", "features", "samples"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "features": {"core", "data"},
    "samples": {"core", "data", "features"},
    "models": STAGES_BELOW_MODELS,
    "predict": STAGES_BELOW_MODELS | {"models"},
    "evaluate": STAGES_BELOW_MODELS | {"models", "predict"},
    "backtest": STAGES_BELOW_MODELS | {"models", "predict"},
    "live": STAGES_BELOW_MODELS | {"models", "predict", "backtest"},
    "report": {"core"},  # documents in: report knows no stage
    "runs": STAGES_BELOW_MODELS | {"models", "predict", "evaluate", "backtest", "live", "report"},
    "demo": STAGES_BELOW_MODELS | {"models", "predict", "evaluate", "backtest", "report", "runs"},
    "cli": STAGES_BELOW_MODELS | {"models", "predict", "evaluate", "backtest", "live", "report", "runs", "demo"},
    "__main__": {"cli"},
    "__init__": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The package's modules that `path` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("lstm_trading")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lstm_trading"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else str(node.module))
    return found & set(MODULES)


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    module = tmp_path / "hidden.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from lstm_trading.models.bundle import Bundle\n"
        "def f():\n    from lstm_trading.live import loop\n    import lstm_trading.predict\n"
    )
    assert imports_of(module) == {"lstm_trading.models.bundle", "lstm_trading.live.loop", "lstm_trading.predict"}


def test_the_allowed_layers_themselves_form_no_cycle() -> None:
    assert find_cycle(ALLOWED) is None


def test_no_import_cycles_between_modules() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_no_import_cycles_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(part(module), set()).update(part(t) for t in targets if part(t) != part(module))
    assert find_cycle(packages) is None, " -> ".join(find_cycle(packages) or [])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_each_module_imports_only_the_layers_below_it(module: str) -> None:
    own = part(module)
    allowed = ALLOWED[own] | {own, "__init__"}  # the root package holds only the version
    wrong = sorted(t for t in GRAPH[module] if part(t) not in allowed)
    assert not wrong, f"{module} ({own}) may import {sorted(ALLOWED[own])} only, but imports {wrong}"

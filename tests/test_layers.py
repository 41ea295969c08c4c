"""The package's layers hold (docs/design.md §8): every module imports only from its own layer and the
layers below it, no modules import each other round a cycle, and the package's own imports sit at module top
except where a reason is stated.

The import graph is read from the source with ``ast``, so an import written inside a function counts as much as
one at the top: hiding an import in a function does not make a layer hold.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top. A package name covers its submodules; "owlens" itself is the package's __init__ only.
LAYERS = (
    ("foundation", ("owlens", "owlens.persist", "owlens.images", "owlens.models", "owlens.boxes", "owlens.queries",
                    "owlens.results", "owlens.schedules", "owlens.statistics")),
    ("library", ("owlens.explain", "owlens.hallucination", "owlens.bias", "owlens.align")),
    ("toy world", ("owlens.toyworld",)),
    ("evaluation", ("owlens.evaluation",)),
    ("runs", ("owlens.rundir", "owlens.browse", "owlens.demo")),
    ("drawing", ("owlens.viz",)),
    ("command line", ("owlens.cli", "owlens.__main__")),
)

# Modules whose own imports may sit inside functions, and why ("package.*": every module under it).
LAZY = {
    "owlens.persist": "``state`` imports torch; run-folder commands and `owlens --help` start without it",
    "owlens.cli.*": "`owlens --help` builds every subcommand's parser without torch or numpy",
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a submodule when the name imported is one)
    line: int
    in_function: bool
    type_checking: bool  # under ``if TYPE_CHECKING:``: never runs


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted((SRC / "owlens").rglob("*.py"))}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> list[Import]:
    found: list[Import] = []
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            function = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            guarded = type_checking or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child, module, is_package)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                           for alias in child.names]
            found.extend(Import(module, target, child.lineno, in_function, type_checking)
                         for target in dict.fromkeys(targets) if target.split(".")[0] == "owlens")
            visit(child, function, guarded)

    visit(ast.parse(path.read_text(encoding="utf-8")), False, False)
    return found


IMPORTS = [i for module, path in MODULES.items() for i in _imports(module, path)]


def _covers(package: str, module: str) -> bool:
    return module == package or (package != "owlens" and module.startswith(package + "."))


def layer_of(module: str) -> int | None:
    """Index into LAYERS of the most specific package that covers ``module``; None when none does."""
    matches = [(len(package), index) for index, (_, packages) in enumerate(LAYERS) for package in packages
               if _covers(package, module)]
    return max(matches)[1] if matches else None


def _where(i: Import) -> str:
    return f"{MODULES[i.source].relative_to(SRC.parent)}:{i.line}"


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS here and in docs/design.md): {unplaced}"


def test_imports_go_down_the_layers():
    upward = [f"{_where(i)}: {i.source} ({LAYERS[layer_of(i.source)][0]}) imports {i.target} "
              f"({LAYERS[layer_of(i.target)][0]}); expected its own layer or one below"
              for i in IMPORTS if layer_of(i.target) is not None and layer_of(i.target) > layer_of(i.source)]
    assert not upward, "imports that go up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("core", ["owlens.models", "owlens.explain", "owlens.hallucination", "owlens.bias",
                                  "owlens.align", "owlens.persist"])
def test_the_core_never_reaches_the_toy_world_or_the_application(core):
    above = ("owlens.toyworld", "owlens.evaluation", "owlens.viz", "owlens.cli", "owlens.demo")
    reached = [f"{_where(i)}: {i.target}" for i in IMPORTS if _covers(core, i.source)
               and any(_covers(package, i.target) for package in above)]
    assert not reached, f"{core} imports what is built on it:\n" + "\n".join(reached)


def test_only_the_command_line_draws():
    # The README's promise: the library (and the demo, which only writes a run folder) never imports viz.
    drawing = [f"{_where(i)}: {i.source}" for i in IMPORTS if _covers("owlens.viz", i.target)
               and not (_covers("owlens.viz", i.source) or _covers("owlens.cli", i.source))]
    assert not drawing, "modules outside cli/ and viz/ that import viz:\n" + "\n".join(drawing)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def test_cycle_finder_finds_a_hidden_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_no_import_cycles():
    # Every import that runs counts, inside functions too (a cycle hidden in a function is still one);
    # type-only imports under TYPE_CHECKING never run and are left out.
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for i in IMPORTS:
        if not i.type_checking and i.target in MODULES and i.target != i.source:
            edges[i.source].add(i.target)
    cycles = _cycles(edges)
    assert not cycles, "modules that import each other, round a cycle: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_own_imports_sit_at_module_top():
    def allowed(module: str) -> bool:
        return any(_covers(key[:-2], module) if key.endswith(".*") else module == key for key in LAZY)

    hidden = [f"{_where(i)}: {i.target}" for i in IMPORTS if i.in_function and not allowed(i.source)]
    assert not hidden, ("imports of owlens inside functions, in modules with no stated reason (move them to the "
                        "top, or add the module and its reason to LAZY):\n" + "\n".join(hidden))

"""The layout holds: imports only go down the wings, no cycles, no private reach-ins.

instrumentor -> clients -> operations -> core. core and operations never
import confluent-kafka; the runtime never imports the tools; no module reads
another module's private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "opentelemetry_instrumentation_kafkaplus"
ROOT = Path(__file__).resolve().parents[2] / "src" / PACKAGE
RANK = {"core": 0, "operations": 1, "clients": 2}
TOP = 3  # the package's own top-level modules (instrumentor, cli, __init__)


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _wing(module: str) -> int:
    parts = module.split(".")
    return RANK.get(parts[1], TOP) if len(parts) > 1 else TOP


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in ``module``."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(package, node)
            names = [f"{target}.{a.name}" for a in node.names]
            candidates = [n for n in names if n in MODULES] or [target]
            out += [(c, id(node) in top_level) for c in candidates]
    return out


def _absolute(package: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative forms resolved against ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(imported: str) -> str | None:
    while imported and imported not in MODULES:
        imported = imported.rpartition(".")[0]
    return imported or None


def test_the_wings_exist():
    assert {m.split(".")[1] for m in MODULES if m.count(".") >= 1} >= set(RANK)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    for imported, _ in _imports(module, MODULES[module]):
        target = _ours(imported)
        if target is None or target in (module, PACKAGE):
            continue
        if target.endswith((".version", ".package")):
            continue  # leaf modules of constants, usable everywhere
        assert _wing(target) <= _wing(module), f"{module} imports {target}, a wing above it"


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if _wing(m) in (RANK["core"], RANK["operations"]))
)
def test_core_and_operations_never_import_confluent_kafka(module):
    for imported, _ in _imports(module, MODULES[module]):
        assert not imported.startswith("confluent_kafka"), f"{module} imports {imported}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_runtime_never_imports_the_tools(module):
    for imported, at_top in _imports(module, MODULES[module]):
        if imported.startswith("kafkaplus_tools"):
            # Only the console script delegates to the optional tools, at call time.
            assert module == f"{PACKAGE}.cli" and not at_top


def test_no_import_cycles():
    graph = {
        m: {t for i, _ in _imports(m, p) if (t := _ours(i)) and t != m and t != PACKAGE}
        for m, p in MODULES.items()
    }
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack, node]))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, [*stack, node])
        done.add(node)

    for module in graph:
        visit(module, [])


def test_function_level_imports_only_for_optional_dependencies():
    allowed = ("confluent_kafka", "opentelemetry.sdk", "kafkaplus_tools", f"{PACKAGE}.clients")
    for module, path in MODULES.items():
        for imported, at_top in _imports(module, path):
            if not at_top:
                assert imported.startswith(allowed), f"{module} imports {imported} in a function"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_another_modules_private_names(module):
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    module_names = set()  # local names bound to modules of the package
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(package, node)
            if _ours(target) is None:
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                assert not private, f"{module} imports {target}.{alias.name}"
                if f"{target}.{alias.name}" in MODULES:
                    module_names.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_names
            and node.attr.startswith("_")
        ):
            raise AssertionError(f"{module} reads {node.value.id}.{node.attr}")


#: Calls that start or end a span. Outside operations/ only core/telemetry.py
#: may make them: it defines the ending helpers themselves.
SPAN_LIFE = {"start_span", "start_as_current_span", "end", "end_span", "fail_span", "mark_error"}


def _operation_modules(module: str, tree: ast.Module) -> set[str]:
    """Local names bound to modules of operations/ (``from ..operations import send``)."""
    package = module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(package, node)
            for alias in node.names:
                if _wing(f"{target}.{alias.name}") == RANK["operations"] and (
                    f"{target}.{alias.name}" in MODULES
                ):
                    names.add(alias.asname or alias.name)
    return names


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _wing(m) != RANK["operations"]))
def test_only_operations_start_or_end_spans(module):
    """A reader finds every span's start and end in operations/: nothing else starts or ends one.

    Other wings may call an operation's own public function (``send.start_span``).
    """
    tree = ast.parse(MODULES[module].read_text())
    operations = _operation_modules(module, tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            name = func.attr
            if isinstance(func.value, ast.Name) and func.value.id in operations:
                continue  # an operation's public function
        elif isinstance(func, ast.Name):
            name = func.id
        else:
            continue
        if name in SPAN_LIFE:
            assert module == f"{PACKAGE}.core.telemetry", (
                f"{module} calls {name}() at line {node.lineno}: spans start and end in operations/"
            )

"""Dependencies point one way (docs/architecture.md): a test reads every import of product code.

    domain apps (orders, kyc, fx) -> notifications, jobs, core   (orders also reads fx)
    fulfilment (a domain app)     -> notifications, jobs, core, and orders' selectors only
    notifications                 -> jobs, core
    jobs                          -> core
    core                          -> nothing of ours
    config (wiring)               -> anything but fakes
    fakes (local stand-ins)       -> nothing of ours; nothing imports them

Imports inside functions count: a late import is still a dependency.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"config", "core", "jobs", "notifications", "orders", "kyc", "fx", "fulfilment", "fakes"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "jobs": {"core"},
    "notifications": {"core", "jobs"},
    "fx": {"core", "jobs"},
    "kyc": {"core", "jobs", "notifications"},
    "orders": {"core", "jobs", "notifications", "fx"},
    # Fulfilment reads orders through orders.selectors only (docs/adr/0006-fulfilment-app.md).
    "fulfilment": {"core", "jobs", "notifications", "orders"},
    "fakes": set(),
    "config": OURS - {"config", "fakes"},
}


def imported_packages(path: Path) -> set[str]:
    """Our top-level packages that `path` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & OURS
    return found


def edges() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> files that import it."""
    graph: dict[str, dict[str, list[str]]] = {}
    for package in sorted(OURS):
        for path in sorted((ROOT / package).rglob("*.py")):
            for target in imported_packages(path) - {package}:
                graph.setdefault(package, {}).setdefault(target, []).append(str(path.relative_to(ROOT)))
    return graph


@pytest.mark.parametrize("package", sorted(OURS))
def test_imports_follow_the_allowed_direction(package):
    forbidden = {
        target: files for target, files in edges().get(package, {}).items() if target not in ALLOWED[package]
    }
    assert not forbidden, f"{package} may import only {sorted(ALLOWED[package])}; found {forbidden}"


def test_fulfilment_reads_orders_through_its_selectors_only():
    reached = {
        target
        for module, targets in module_graph().items()
        if module.startswith("fulfilment.")
        for target in targets
        if target.split(".")[0] == "orders"
    }
    assert reached <= {"orders.selectors"}, (
        f"fulfilment may use orders.selectors only; found {sorted(reached)}"
    )


def test_the_allowed_graph_has_no_cycle():
    # Depth-first search over the allowed edges: a package on the current path seen again is a cycle.
    def visit(package: str, path: tuple[str, ...]) -> None:
        assert package not in path, f"cycle: {' -> '.join((*path, package))}"
        for target in ALLOWED[package]:
            visit(target, (*path, package))

    for package in ALLOWED:
        visit(package, ())


def module_graph() -> dict[str, set[str]]:
    """Every product module -> the product modules it imports (late imports included)."""
    modules: dict[str, Path] = {}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules:  # a name inside a module: the module
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def test_no_module_imports_itself_through_others():
    # e.g. orders/exports.py -> orders/tasks.py -> orders/exports.py, even through a late import
    graph = module_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(f"import cycle: {' -> '.join([*path[path.index(module) :], module])}")
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_reader_sees_late_imports_too(tmp_path):
    # A late import inside a function is found as well as one at the top.
    module = tmp_path / "example.py"
    module.write_text(
        "import json\n\ndef f():\n    from orders.models import Order\n    import fakes.smtp_sink\n"
    )
    assert imported_packages(module) == {"orders", "fakes"}

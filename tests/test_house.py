"""House rules that a test can hold: functions short enough to read at once."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pneumokit"
MAX_LINES = 80


def test_no_function_in_pneumokit_is_80_lines_or_longer():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines >= MAX_LINES:
                    where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    long.append(f"{where} {node.name} ({lines} lines)")
    assert not long, "split these functions: " + "; ".join(long)


# The stages, bottom up (docs/architecture.md): a module imports only from its own stage or below.
STAGES = {"errors": 0, "hookspecs": 0, "core": 1, "data": 2, "models": 3, "registry": 4, "training": 5,
          "inference": 6, "testing": 7, "cli": 7, "": 7}


def _imports() -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every module of the package (function-level imports
    too), as dotted names below ``pneumokit``."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}".strip(".") for a in node.names]
                found = [s for s in subs if s in modules]
                deps |= set(found) if node.module is None and len(found) == len(subs) else {target}
        graph[name] = {d for d in deps if d != name}
    return graph


def _stage(module: str) -> int:
    return STAGES[module.split(".")[0]]


def test_imports_point_down_the_stages():
    upward = sorted(f"{m} imports {d}" for m, deps in _imports().items() for d in deps
                    if _stage(d) > _stage(m))
    assert not upward, "an upward import: " + "; ".join(upward)


def test_no_import_cycle():
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(trail[trail.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_top_level_reads_as_the_pipeline():
    entries = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__")))
    assert entries == ["cli.py", "core", "data", "errors.py", "hookspecs.py", "inference", "models",
                       "registry", "testing.py", "training"]


def test_old_module_paths_give_the_modules_at_their_new_paths():
    """Plugins and scripts written before the stages keep working, against the very same module
    objects (a monkeypatch through an old path patches the real module)."""
    import importlib

    from pneumokit.core.moved import MOVED

    for old, new in MOVED.items():
        assert importlib.import_module(f"pneumokit.{old}") is importlib.import_module(f"pneumokit.{new}"), old
    from pneumokit.augmentations.layers import SeededAugmentation

    from pneumokit.models.augmentations import layers
    from pneumokit.registry import Registry
    from pneumokit.registry.store import Registry as StoreRegistry

    assert SeededAugmentation is layers.SeededAugmentation and Registry is StoreRegistry


def test_the_stage_packages_keep_their_old_names():
    """``pneumokit.data`` and ``pneumokit.registry`` were modules: their names still come from them."""
    from pneumokit.data import DatasetError, Problem, dataset, prepare_cv_data, scan
    from pneumokit.registry import METADATA_FILE, Registry, store

    assert scan is dataset.scan and prepare_cv_data is dataset.prepare_cv_data and callable(scan)
    assert DatasetError is dataset.DatasetError and Problem is dataset.Problem
    assert Registry is store.Registry and METADATA_FILE == "metadata.json"

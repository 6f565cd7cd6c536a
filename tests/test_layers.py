"""The layer rules, read from the source: each folder imports only the layers below it, and nothing imports in a
circle. Adding a forbidden import anywhere (also inside a function) fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "acsdk", "export")

_BASE = {"runtime", "acsdk.errors", "acsdk.version"}
# What each layer may import from this repository (besides itself). Longest prefix names a module's layer.
ALLOWED: dict[str, set[str]] = {
    "runtime": {"runtime"},
    "acsdk.errors": _BASE,
    "acsdk.version": _BASE,
    "acsdk.models": _BASE,
    "acsdk.testing": _BASE | {"acsdk.models"},
    "acsdk.inference": _BASE | {"acsdk.models"},
    "acsdk.data": _BASE | {"acsdk.models", "acsdk.inference"},
    "acsdk.training": _BASE | {"acsdk.models", "acsdk.inference", "acsdk.data"},
    # evaluation reads data (MVTec layout, generate's layout) and trains its own detector; it shares inference's
    # image and mask rules (one mask resize for every reader) rather than copying them
    "acsdk.evaluation": _BASE | {"acsdk.data", "acsdk.inference"},
    # export builds on the model; its INT8 step calibrates and gates on the pipeline (inference, procedural data)
    "export": _BASE | {"acsdk.models", "acsdk.inference", "acsdk.data"},
    # The public facade, the `python -m` entry points and the apps sit on top.
    "acsdk": _BASE | {"acsdk.inference"},
    "acsdk.train": {"acsdk.training"},
    "acsdk.train_base": {"acsdk.training"},
    "acsdk.__main__": {"acsdk.apps"},
    "acsdk.apps": _BASE
    | {
        "acsdk.models",
        "acsdk.inference",
        "acsdk.data",
        "acsdk.training",
        "acsdk.evaluation",
        "acsdk.apps",
        "acsdk",
        "export",
    },
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    match = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    return max(match, key=len)


def _targets(node: ast.AST, package: str) -> list[str]:
    """Repository modules an import statement names, relative imports resolved against `package`."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            parts = package.split(".")
            prefix = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        # `from pkg import sub` may name a submodule; count the deeper name when it is one.
        names = [f"{prefix}.{a.name}" if _is_module(f"{prefix}.{a.name}") else prefix for a in node.names]
    else:
        return []
    return [n for n in names if n.split(".")[0] in PACKAGES]


def _imports(path: Path) -> set[str]:
    """Every repository module `path` imports, function-level imports included."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return {t for node in ast.walk(ast.parse(path.read_text())) for t in _targets(node, package)}


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in _sources()}


def _allowed(importer: str, imported: str) -> bool:
    own, target = _layer(importer), _layer(imported)
    return target == own or target in ALLOWED[own]


def test_every_import_points_down():
    bad = [
        f"{mod} ({_layer(mod)}) imports {imp} ({_layer(imp)})"
        for mod, imports in _graph().items()
        for imp in sorted(imports)
        if not _allowed(mod, imp)
    ]
    assert not bad, "imports against the layer rules:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph or _is_package_init(nxt, node):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _is_package_init(target: str, importer: str) -> bool:
    """A module importing its own package's __init__ (to reach a sibling) is how Python packages work."""
    return importer.startswith(target + ".")


def test_every_package_states_its_contract():
    for init in sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc.strip(), f"{init.relative_to(ROOT)} has no docstring"
        if _module_name(init) in ("runtime", "export") or _module_name(init).count(".") == 1:
            assert "contract" in doc.lower() or "layer" in doc.lower(), f"{init.relative_to(ROOT)} names no layer"


@pytest.mark.parametrize(
    ("importer", "line", "allowed"),
    [
        ("acsdk/inference/sampler.py", "from export.specs import SPECS", False),
        ("export/build.py", "from acsdk.training.adapter import train", False),
        ("acsdk/models/sga.py", "from ..inference import imaging", False),
        ("runtime/engine.py", "import acsdk", False),
        ("export/build.py", "from acsdk.testing import make_texture", False),
        ("acsdk/data/generate.py", "from ..training.adapter import train", False),
        ("acsdk/apps/demo.py", "from export.build import build_engine_dir", True),
        ("acsdk/training/adapter.py", "from ..data.mvtec import load_category", True),
    ],
)
def test_the_rules_catch_a_forbidden_import(importer, line, allowed):
    """The checker itself: the same line judged as if it stood in `importer`."""
    module = _module_name(ROOT / importer)
    targets = _targets(ast.parse(line).body[0], module.rpartition(".")[0])
    assert targets and all(_allowed(module, t) for t in targets) is allowed


def test_ray_is_imported_only_by_generate_ray_and_that_only_inside_a_function():
    """A local run (and `import acsdk`) must never pay for, or need, Ray."""
    ray_users, top_level_users = set(), set()
    for path in _sources():
        tree = ast.parse(path.read_text())
        module = _module_name(path)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == "ray" or n.startswith("ray.") for n in names):
                ray_users.add(module)
        for node in tree.body:  # module-level statements only
            targets = _targets(node, module if path.name == "__init__.py" else module.rpartition(".")[0])
            if "acsdk.data.generate_ray" in targets:
                top_level_users.add(module)
    assert ray_users <= {"acsdk.data.generate_ray"}, ray_users
    assert not top_level_users, f"imported at module level by {top_level_users}"

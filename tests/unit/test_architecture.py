"""The one-way import direction of docs/architecture.md, 'Layers', checked on the source and in
fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PKG = ROOT / "jumpray"

# Lower number = lower layer. A module may import only from its own layer or below
# (train and score share a layer but must not import each other).
LAYERS: dict[str, int] = {
    "config": 0,
    "errors": 0,
    "log": 0,
    "runs": 0,
    "files": 0,
    "storage": 0,
    "plots": 2,
    "core": 1,
    "data": 2,
    "models": 2,
    "tracking": 2,
    "checkpoint": 2,
    "ray_utils": 2,
    "train": 3,
    "score": 3,
    "tune": 4,
    "jobs": 5,
    "cli": 5,
    "api": 6,
}
SIBLINGS_FORBIDDEN = {("train", "score"), ("score", "train")}
CORE_ALLOWED_EXTERNAL = {
    "torch",
    "numpy",
    "math",
    "dataclasses",
    "typing",
    "collections",
    "__future__",
    "functools",
    "itertools",
}


def _component(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "jumpray" and len(parts) > 1 else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if node.module == "jumpray"]
    return found


def _sources():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        yield path, module


def test_every_component_has_a_layer():
    components = {_component(m) for _, m in _sources()} - {None}
    assert components <= set(LAYERS), (
        f"add a layer for {components - set(LAYERS)} in this test and README"
    )


@pytest.mark.parametrize(
    "path,module", list(_sources()), ids=lambda x: str(x) if isinstance(x, str) else ""
)
def test_imports_point_down(path, module):
    me = _component(module)
    if me is None:
        return
    for imported in _imports(path):
        other = _component(imported)
        if imported.startswith("pipelines"):
            pytest.fail(f"{module} imports {imported}: nothing in jumpray imports pipelines/")
        if other is None or other == me:
            continue
        assert (me, other) not in SIBLINGS_FORBIDDEN, (
            f"{module} imports {imported}: train and score are independent"
        )
        assert LAYERS[other] <= LAYERS[me], (
            f"{module} (layer {me}) imports {imported} (layer {other}, above it)"
        )


def test_core_imports_only_torch_numpy_and_errors():
    for path in sorted((PKG / "core").rglob("*.py")):
        for imported in _imports(path):
            top = imported.split(".")[0]
            if top == "jumpray":
                assert imported.startswith(("jumpray.errors", "jumpray.core")), (
                    f"{path.name} imports {imported}"
                )
            else:
                assert top in CORE_ALLOWED_EXTERNAL, f"jumpray/core/{path.name} imports {imported}"


def _pulled_in(module: str, heavy: tuple[str, ...]) -> list[str]:
    """The ``heavy`` modules a fresh interpreter has loaded after ``import module``."""
    code = f"import sys, {module}\nprint(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    return sorted(filter(None, out.split(",")))


@pytest.mark.parametrize(
    "module",
    [
        "jumpray",
        "jumpray.api",
        "jumpray.core",
        "jumpray.config",
        "jumpray.models",
        "jumpray.train.loop",
    ],
)
def test_light_imports_stay_light(module):
    bad = _pulled_in(module, ("ray", "mlflow", "webdataset"))
    assert bad == [], f"importing {module} pulled in {bad}"


@pytest.mark.parametrize(
    "module",
    ["jumpray.train.split", "jumpray.train.progress", "jumpray.data.shards", "jumpray.data.scan"],
)
def test_what_rays_helper_processes_import_stays_torch_free(module):
    """Ray Train's controller and dataset manager and the shard-scan tasks import these (they
    unpickle the callback, the data config and the read plan); torch there cost each run about
    3 s per process on 2 cores."""
    assert _pulled_in(module, ("torch",)) == [], f"importing {module} pulled in torch"


def test_pipelines_is_not_a_package():
    assert not (ROOT / "pipelines" / "__init__.py").exists()


def test_test_modules_outside_packages_have_unique_names():
    """pytest imports a test module of a folder without ``__init__.py`` by its bare name: two
    such modules with one name break collection of the whole suite (it happened twice)."""
    root = Path(__file__).parents[1]
    seen: dict[str, Path] = {}
    for path in sorted(root.rglob("test_*.py")):
        if (path.parent / "__init__.py").exists():
            continue
        assert path.name not in seen, f"{path} and {seen[path.name]}: rename one"
        seen[path.name] = path

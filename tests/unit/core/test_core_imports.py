"""jumpray.core stays pure: torch, numpy and the standard maths modules only (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import jumpray.core

ALLOWED_ROOTS = {"torch", "numpy", "math", "dataclasses", "typing", "collections", "__future__"}
ALLOWED_JUMPRAY = {"jumpray.errors", "jumpray.core"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_only_allowed_modules():
    core_dir = Path(jumpray.core.__file__).parent
    files = sorted(core_dir.glob("*.py"))
    assert {f.name for f in files} >= {"codebook.py", "losses.py", "selection.py", "flags.py"}
    for f in files:
        for name in _imports(f):
            root = name.split(".")[0]
            ok = root in ALLOWED_ROOTS or any(
                name == m or name.startswith(m + ".") for m in ALLOWED_JUMPRAY
            )
            assert ok, f"{f.name} imports {name}"


def test_import_core_loads_no_heavy_stack():
    code = (
        "import sys, jumpray.core; "
        "bad = [m for m in ('ray', 'mlflow', 'webdataset', 'PIL', 'pyarrow') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

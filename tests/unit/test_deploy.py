"""deploy/ files parse, and every pipeline script they name exists (and is a thin door to the CLI)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def test_deploy_yaml_files_parse_and_name_real_pipelines():
    files = sorted((ROOT / "deploy").rglob("*.yaml"))
    assert len(files) >= 3
    named = set()
    for f in files:
        yaml.safe_load(f.read_text())
        named |= set(re.findall(r"pipelines/(\w+)\.py", f.read_text()))
    named |= set(re.findall(r"pipelines/(\w+)\.py", (ROOT / "deploy" / "README.md").read_text()))
    assert named, "deploy files should show how a pipeline is submitted"
    for name in named:
        assert (ROOT / "pipelines" / f"{name}.py").is_file(), name


def test_pipeline_scripts_only_call_the_cli():
    for script in sorted((ROOT / "pipelines").glob("*.py")):
        text = script.read_text()
        assert "jumpray.cli" in text and "main(" in text, script.name
        assert len(text.splitlines()) < 60, (
            f"{script.name}: logic belongs in jumpray/jobs, not here"
        )

"""deploy/: every manifest parses, names real commands, options, config keys, files and images,
and holds no secret value (no Ray, no network)."""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jumpray.cli import COMMANDS, build_parser
from jumpray.config import load_config, resolve_config_path

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))
# Environment names that hold credentials: only ever from a Secret (valueFrom / secretRef).
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)
# Literal credentials in text: an AWS access key id, a 40-char secret, a hex token, user:pass@.
SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])|\b[0-9a-f]{32,}\b"
    r"|://[^/\s:@]+:[^/\s@]+@"
)


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k), v
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _readme_commands() -> list[str]:
    """The shell commands of deploy/README.md's code blocks (continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", (DEPLOY / "README.md").read_text(), re.S)
    return [line for b in blocks for line in b.replace("\\\n", " ").splitlines() if line.strip()]


def _jumpray_commands() -> list[tuple[str, list[str]]]:
    """Every ``jumpray <command> ...`` named in deploy/: (where, its arguments after jumpray)."""
    texts = [("README.md", line) for line in _readme_commands()]
    for path in MANIFESTS:
        texts += [(path.name, str(v)) for k, v in _walk(_docs(path)) if k == "entrypoint"]
    found = []
    for where, text in texts:
        words = shlex.split(text)
        for i, word in enumerate(words[:-1]):
            if word == "jumpray" and words[i + 1] in COMMANDS:
                rest = words[i + 1 :]
                stop = [j for j, w in enumerate(rest) if w in ("&&", "||", "|", ";", "&")]
                found.append((where, rest[: stop[0]] if stop else rest))
    return found


def test_every_manifest_parses_and_the_expected_ones_exist():
    names = {str(p.relative_to(DEPLOY)) for p in MANIFESTS}
    expected = {"k8s/config.yaml", "k8s/raycluster.yaml", "k8s/mlflow.yaml"}
    expected |= {f"k8s/rayjob-{c}.yaml" for c in ("train", "clean", "tune")}
    expected |= {"ray/cluster.yaml", "ray/runtime_env.yaml", "mlflow/compose.yaml"}
    assert expected <= names
    for path in MANIFESTS:
        assert _docs(path), path


def test_every_jumpray_command_is_real_with_real_options_config_and_keys():
    commands = _jumpray_commands()
    named = {args[0] for _, args in commands}
    assert {"train", "clean", "tune"} <= named, named
    for where, args in commands:
        try:
            parsed = build_parser(args[0]).parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: `jumpray {' '.join(args)}` is not a valid command line")
        assert parsed.config, f"{where}: name a config"
        # The config exists (a file or a shipped name) and every override is a real key.
        load_config(resolve_config_path(parsed.config), parsed.overrides)
        # A sweep's OUT is local (jumpray tune refuses a URI there); its trials' checkpoints go
        # to object storage instead. Every other folder is in object storage.
        sweep = args[0] == "tune"
        for folder in (parsed.shards,) if sweep else (parsed.shards, parsed.out):
            assert str(folder).startswith("s3:/"), f"{where}: {folder} is not in object storage"
        if sweep:
            assert not str(parsed.out).startswith("s3:"), f"{where}: a sweep's --out is local"
            assert "scaling.storage_path=s3://" in " ".join(parsed.overrides), where
        storage = [o for o in parsed.overrides if o.startswith("scaling.storage_path=")]
        assert args[0] == "tune" or storage, f"{where}: checkpoints outside object storage"


def test_every_file_named_exists():
    texts = [p.read_text() for p in [*MANIFESTS, DEPLOY / "README.md", DEPLOY / "Dockerfile"]]
    named = set()
    for text in texts:
        named |= set(re.findall(r"(?<![\w/])((?:deploy|configs|pipelines)/[\w./-]+\.\w+)", text))
    assert named
    for name in named:
        assert (ROOT / name).is_file(), name
    for where, args in _jumpray_commands():
        config = build_parser(args[0]).parse_args(args).config
        assert resolve_config_path(config).is_file(), (where, config)


def test_images_match_the_pins():
    pins, project = _pins(), _project()
    ray, python = pins["ray"], "py311"
    assert project["requires-python"].startswith(">=3.11")  # the py311 images
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{ray}-{python}\n" in dockerfile
    assert 'pip install --no-cache-dir -c constraints.txt ".[ray,track]"' in dockerfile
    assert f"ray.__version__ == '{ray}'" in dockerfile
    ours = {f"jumpray:{project['version']}", f"jumpray:{project['version']}-gpu"}
    for path in [*MANIFESTS, DEPLOY / "README.md", DEPLOY / "Dockerfile"]:
        text = path.read_text()
        for base in re.findall(r"rayproject/ray:([\w.-]+)", text):
            assert base in (f"{ray}-{python}", f"{ray}-{python}-gpu"), (path.name, base)
        for image in re.findall(r"\bjumpray:[\w.-]+", text):
            assert image in ours, (path.name, image)
    for path in MANIFESTS:
        for key, value in _walk(_docs(path)):
            if key in ("image", "head_image", "worker_image"):
                assert value in ours, (path.name, value)
            if key == "rayVersion":
                assert value == ray, path.name
    build = [c for c in _readme_commands() if c.startswith("docker build")]
    assert {c.split(" -t ")[-1].split()[0] for c in build} == ours


def test_ray_clusters_share_one_spec_with_token_auth_cpu_head_and_gpu_autoscaling():
    cluster = _docs(DEPLOY / "k8s" / "raycluster.yaml")[0]
    assert cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    assert spec["authOptions"]["mode"] == "token" and spec["enableInTreeAutoscaling"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] < gpu["maxReplicas"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    for command in ("train", "clean", "tune"):
        job = _docs(DEPLOY / "k8s" / f"rayjob-{command}.yaml")[0]
        assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
        assert job["spec"]["rayClusterSpec"] == spec, f"rayjob-{command}.yaml drifted"
        assert job["spec"]["entrypoint"].startswith(f"jumpray {command} ")
    # The MLflow address and S3 settings come from the ConfigMap, the keys from the Secret.
    sources = {next(iter(s.values()))["name"] for s in head["envFrom"]}
    assert sources == {"jumpray-config", "jumpray-s3"}
    config = _docs(DEPLOY / "k8s" / "config.yaml")[0]
    assert config["kind"] == "ConfigMap" and "MLFLOW_TRACKING_URI" in config["data"]


def test_mlflow_servers_have_both_stores_and_allow_their_service_name():
    service = next(d for d in _docs(DEPLOY / "k8s" / "mlflow.yaml") if d["kind"] == "Service")
    name = service["metadata"]["name"]
    deployment = next(d for d in _docs(DEPLOY / "k8s" / "mlflow.yaml") if d["kind"] == "Deployment")
    k8s_args = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    compose = _docs(DEPLOY / "mlflow" / "compose.yaml")[0]["services"]["mlflow"]
    uri = _docs(DEPLOY / "k8s" / "config.yaml")[0]["data"]["MLFLOW_TRACKING_URI"]
    host = re.match(r"http://([^/]+)", uri).group(1)
    for args, service_name in ((k8s_args, name), (compose["command"], "mlflow")):
        flags = dict(a.split("=", 1) for a in args if a.startswith("--"))
        assert flags["--backend-store-uri"] and flags["--artifacts-destination"]
        allowed = flags["--allowed-hosts"].split(",")
        assert service_name in allowed and f"{service_name}:5000" in allowed
    assert host in dict(a.split("=", 1) for a in k8s_args if "=" in a)["--allowed-hosts"].split(",")
    # The development server is published on loopback only.
    assert all(p.startswith("127.0.0.1:") for p in compose["ports"])


def test_no_secret_values_inline():
    for path in [*MANIFESTS, DEPLOY / "README.md", DEPLOY / "Dockerfile"]:
        text = path.read_text()
        assert not SECRET_VALUE.search(text), (path.name, SECRET_VALUE.search(text).group(0))
        if path.suffix != ".yaml":
            continue
        for doc in _docs(path):
            assert doc.get("kind") != "Secret", f"{path.name}: create Secrets from files/env"
            for key, value in _walk(doc):
                if key in ("env_vars", "data") and isinstance(value, dict):
                    leaked = [k for k in value if SECRET_NAME.search(k)]
                    assert not leaked, (path.name, leaked)
                if key == "env" and isinstance(value, list):
                    for var in value:
                        if SECRET_NAME.search(var["name"]):
                            assert "secretKeyRef" in var.get("valueFrom", {}), (path.name, var)
    for line in _readme_commands():
        for literal in re.findall(r"--from-literal=(\w+)=(\S+)", line):
            assert literal[1].startswith('"$'), f"README: {literal[0]} must come from the env"


def test_pipeline_scripts_only_call_the_cli():
    for script in sorted((ROOT / "pipelines").glob("*.py")):
        text = script.read_text()
        assert "jumpray.cli" in text and "main(" in text, script.name
        assert len(text.splitlines()) < 60, (
            f"{script.name}: logic belongs in jumpray/jobs, not here"
        )

"""Issue 17, item 6: what jumpray starts listens on loopback, run state loads weights-only and
only from the configured storage, credentials never enter the config (no Ray is started here).

Shards are never unpickled: tests/unit/data/test_scan.py and test_plain_reader.py; a pickled
checkpoint is refused: tests/unit/test_tracking_checkpoint.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

import jumpray.ray_utils as ray_utils
from jumpray.checkpoint import require_inside
from jumpray.config import load_config
from jumpray.errors import ConfigError, UsageError

ROOT = Path(__file__).parents[2]


@pytest.fixture
def fake_ray(monkeypatch) -> list[dict[str, Any]]:
    """``ray.init`` recorded instead of run: the keyword arguments of each call."""
    import ray

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ray_utils.API_SERVER_ENV, raising=False)
    return calls


def test_a_local_ray_is_our_own_with_its_dashboard_on_loopback(fake_ray):
    ray_utils.init_ray(num_cpus=1, runtime_env={"env_vars": {"A": "1"}, "pip": ["x"]})
    (kw,) = fake_ray
    # Not the last `ray start` cluster on the machine; the dashboard on 127.0.0.1 only.
    assert kw["address"] == "local" and kw["dashboard_host"] == "127.0.0.1"
    port = kw["dashboard_port"]
    assert isinstance(port, int) and port > 0
    env = kw["runtime_env"]["env_vars"]
    # Every process of the run asks its own dashboard, whatever else runs on the machine.
    assert env == {"A": "1", "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    assert kw["runtime_env"]["pip"] == ["x"]


def test_only_a_local_ray_turns_off_rays_preemption_watcher(fake_ray, monkeypatch):
    (name,) = ray_utils.LOCAL_RAY_ENV
    monkeypatch.delenv(name, raising=False)
    ray_utils.init_ray(address="10.0.0.5:6379")  # a cluster: nodes may be drained, keep it
    assert name not in os.environ
    ray_utils.init_ray(num_cpus=1)  # one machine that is the whole cluster: nothing to watch
    assert os.environ[name] == "0"
    monkeypatch.setenv(name, "1")  # a value the user set wins
    ray_utils.init_ray(num_cpus=1)
    assert os.environ[name] == "1"


def test_joining_a_cluster_points_the_state_api_at_its_gcs(fake_ray, monkeypatch):
    for name in ray_utils.STORE_SETTINGS:  # tested on their own in test_storage.py
        monkeypatch.delenv(name, raising=False)
    ray_utils.init_ray(address="10.0.0.5:6379")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    ray_utils.init_ray()
    joined, client = fake_ray
    assert joined["runtime_env"] == {"env_vars": {"RAY_API_SERVER_ADDRESS": "10.0.0.5:6379"}}
    assert "num_cpus" not in joined and "dashboard_host" not in joined
    # A Ray Client address says nothing about which instance: left to Ray.
    assert client["address"] == "ray://head:10001" and client["runtime_env"] is None


def test_a_variable_the_user_set_is_left_to_the_user(fake_ray, monkeypatch):
    monkeypatch.setenv(ray_utils.API_SERVER_ENV, "http://127.0.0.1:9999")
    assert ray_utils.job_env_vars(api_server="http://127.0.0.1:1") == {}
    ray_utils.init_ray(
        num_cpus=1, runtime_env={"env_vars": {ray_utils.API_SERVER_ENV: "http://x:1"}}
    )
    assert fake_ray[0]["runtime_env"] == {"env_vars": {ray_utils.API_SERVER_ENV: "http://x:1"}}


def _library_sources() -> list[tuple[str, str]]:
    return [
        (str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "jumpray").rglob("*.py"))
    ]


def test_every_torch_load_is_weights_only_and_nothing_else_unpickles_files():
    loads = 0
    for name, text in _library_sources():
        for call in re.findall(r"torch\.load\(([^)]*)\)", text):
            loads += 1
            assert "weights_only=True" in call, f"{name}: torch.load({call})"
        for pattern in (
            r"pickle\.loads?\(",
            r"allow_pickle\s*=\s*True",
            r"cloudpickle\.",
            r"\bdill\.",
        ):
            assert not re.search(pattern, text), f"{name}: {pattern}"
    assert loads >= 1  # jumpray.checkpoint.load_checkpoint


def test_mlflow_models_load_weights_only():
    for name, text in _library_sources():
        assert "mlflow.pytorch.load_model(" not in text, name


def test_require_inside_follows_links_and_dots(tmp_path):
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (root / "ray_tune").mkdir(parents=True)
    elsewhere.mkdir()
    require_inside(root / "ray_tune" / "sweep", root, what="x")
    require_inside(root, root, what="x")
    (root / "linked").symlink_to(elsewhere)
    for outside in (root / "linked" / "sweep", root / ".." / "elsewhere", tmp_path / "out2"):
        with pytest.raises(UsageError, match="outside the configured storage"):
            require_inside(outside, root, what="x")
    # Object storage: a URI and Ray Train's scheme-less filesystem path compare alike.
    require_inside("bucket/runs/r1/checkpoint_0", "s3://bucket/runs/r1", what="x")
    with pytest.raises(UsageError):
        require_inside("s3://bucket/runs/r1/../../other/c", "s3://bucket/runs/r1", what="x")
    with pytest.raises(UsageError):
        require_inside("bucket/runs/r10", "s3://bucket/runs/r1", what="x")


def _train_record(out: Path, run_name: str, storage: Path) -> None:
    from jumpray.train.launch import RUN_FILE

    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps({"run_name": run_name, "storage_path": str(storage)}))


def test_train_resume_refuses_a_run_outside_its_storage(tmp_path):
    from jumpray.jobs._run import resume_name

    out, storage = tmp_path / "out", tmp_path / "out" / "ray_results"
    (storage / "jumpray-run").mkdir(parents=True)
    _train_record(out, "jumpray-run", storage)
    assert resume_name(out, required=True) == "jumpray-run"
    _train_record(out, "../../elsewhere", storage)
    with pytest.raises(UsageError, match="not a run name"):
        resume_name(out, required=True)
    (tmp_path / "elsewhere").mkdir()
    (storage / "linked").symlink_to(tmp_path / "elsewhere")
    _train_record(out, "linked", storage)
    with pytest.raises(UsageError, match="outside the configured storage"):
        resume_name(out, required=True)


def test_tune_resume_refuses_state_outside_out_before_ray_starts(tmp_path, monkeypatch):
    import jumpray.jobs.tune as tune_job

    def no_ray(**_):
        raise AssertionError("Ray must not start for a refused --resume")

    monkeypatch.setattr(ray_utils, "init_ray", no_ray)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    (elsewhere / "sweep").mkdir(parents=True)
    (out / "ray_tune").symlink_to(elsewhere)
    with pytest.raises(UsageError, match="Tune's state .* is outside the configured storage"):
        tune_job.run_tune(shards=tmp_path / "shards", out=out, resume=True)


@pytest.mark.parametrize(
    "override",
    [
        "tracking.uri=http://alice:hunter2@mlflow:5000",
        "scaling.storage_path=s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/runs",
        "scaling.address=ray://alice:pw@head:10001",
    ],
)
def test_credentials_in_a_uri_are_refused_without_repeating_them(override):
    with pytest.raises(ConfigError, match="holds credentials") as info:
        load_config(None, [override])
    secret = override.split("://")[1].split("@")[0].split(":")[1]
    assert secret not in str(info.value)
    assert "in the environment" in str(info.value)


def test_plain_uris_are_kept():
    cfg = load_config(
        None, ["tracking.uri=http://mlflow:5000", "scaling.storage_path=s3://bucket/runs"]
    )
    assert cfg.tracking.uri == "http://mlflow:5000"

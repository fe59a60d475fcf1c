"""jumpray.storage's path/URI rules and the run folder's object-storage checks (no server here:
tests/integration/test_object_storage*.py run a real S3 server)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jumpray import storage
from jumpray.errors import UsageError
from jumpray.runs import check_sources, pull_mirror


def test_a_uri_stays_text_and_a_path_becomes_a_path():
    assert storage.location("s3://bkt/data/") == "s3://bkt/data"
    assert storage.location("runs/out") == Path("runs/out")
    assert (
        storage.is_uri("gs://b/p")
        and not storage.is_uri(Path("s3:/b"))
        and not storage.is_uri(None)
    )
    assert storage.join("s3://bkt/p", "a", "b.tar") == "s3://bkt/p/a/b.tar"
    assert storage.join(Path("x"), "b.tar") == Path("x/b.tar")
    assert (
        storage.name_of("s3://bkt/p/b.tar") == "b.tar"
        and storage.parent_of("s3://bkt/p/b.tar") == "s3://bkt/p"
    )


def test_secrets_in_a_uri_are_never_shown():
    assert storage.redact("s3://AKIA:hunter2@bkt/p?region=x") == "s3://bkt/p?region=x"
    assert storage.redact("/data/a@b") == "/data/a@b"
    assert storage.same_location("s3://u:p@bkt/p/", "s3://bkt/p")
    assert "hunter2" not in str(storage.mirror_dir("s3://AKIA:hunter2@bkt/p"))


def test_two_uris_never_share_a_mirror(monkeypatch, tmp_path):
    monkeypatch.setenv("JUMPRAY_WORK_DIR", str(tmp_path))
    a, b = storage.mirror_dir("s3://one/runs/x"), storage.mirror_dir("s3://two/runs/x")
    assert a != b and a.parent == tmp_path and a.name.startswith("x-")


def test_an_output_uri_may_not_overlap_a_source_uri():
    for out, source in [
        ("s3://b/data", "s3://b/data"),
        ("s3://b/data/clean", "s3://b/data"),
        ("s3://b", "s3://b/data"),
    ]:
        with pytest.raises(UsageError, match="could destroy"):
            check_sources(out, [source])
    check_sources("s3://b/data-clean", ["s3://b/data", None])
    check_sources("s3://b/out", [Path("/data/shards")])


def test_a_mirror_in_use_by_a_live_run_is_not_refreshed(monkeypatch, tmp_path):
    monkeypatch.setenv("JUMPRAY_WORK_DIR", str(tmp_path))
    uri = "s3://bkt/runs/busy"
    mirror = storage.mirror_dir(uri)
    mirror.mkdir(parents=True)
    marker = {"command": "clean", "state": "running", "pid": os.getppid(), "inputs": {}}
    (mirror / "jumpray_run.json").write_text(json.dumps(marker))
    with pytest.raises(UsageError, match="being written by another jumpray process"):
        pull_mirror(uri, "run")
    assert (mirror / "jumpray_run.json").exists()


def test_only_the_store_settings_that_are_not_secrets_go_to_a_joined_cluster(monkeypatch):
    from jumpray.ray_utils import store_env_vars

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert store_env_vars() == {
        "AWS_ENDPOINT_URL": "http://minio.local:9000",
        "AWS_REGION": "eu-west-1",
    }
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # inside `ray job submit`
    assert store_env_vars() == {}


def test_credentials_in_a_uri_are_refused_without_repeating_them():
    from jumpray.data.scan import check_shard_folders

    with pytest.raises(storage.StorageError) as err:
        check_shard_folders("s3://AKIA:hunter2@bkt/shards")
    assert "credentials in a URI are refused" in str(err.value)
    assert "hunter2" not in str(err.value) and "AKIA" not in str(err.value)


def test_a_sweep_refuses_an_object_storage_out_with_the_fix():
    from jumpray.jobs.tune import run_tune

    with pytest.raises(UsageError, match="scaling.storage_path=s3://") as err:
        run_tune(shards="s3://bkt/shards", out="s3://AKIA:hunter2@bkt/sweep")
    assert "hunter2" not in str(err.value)

"""The Python API end to end on tiny Fashion-MNIST shards (docs/api.md): each public function, with
and without a caller-started Ray; the array decision against a real clean run's labels.parquet;
the logged MLflow model against the scorer; ``score --checkpoint runs:/`` and ``models:/``;
the notebook-style example. Real Ray Train runs: a few minutes on a 2-core box."""

from __future__ import annotations

import contextlib
import runpy
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import jumpray
from jumpray.cli import main
from jumpray.data.convert import write_fashion_mnist
from jumpray.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from jumpray.data.schema import read_index

pytestmark = [pytest.mark.integration]

EXAMPLE = Path(__file__).parents[2] / "examples" / "clean_a_folder.py"
# The tiny run: the smoke config (2 epochs), both snapshots score.
TINY = {"snapshots__keep": 2, "score__num_snapshots": 2}


@contextlib.contextmanager
def no_caller_ray():
    """Run with no Ray in this process; the session's test Ray (tests/conftest.py) is brought
    back afterwards when it was up, with the same settings."""
    import ray

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    try:
        yield
    finally:
        if was_up and not ray.is_initialized():
            from jumpray.ray_utils import init_ray

            init_ray(num_cpus=2, object_store_memory=512 * 1024**2, for_tests=True)


def _ray_up() -> bool:
    import ray

    return ray.is_initialized()


def _tracking(uri: str) -> dict:
    return {"enabled": True, "uri": uri, "experiment": "test-api"}


@pytest.fixture(scope="module")
def data(tmp_path_factory, fashion_mnist_dir) -> Path:
    root = tmp_path_factory.mktemp("api")
    write_fashion_mnist(root / "train", split="train", limit=400, noise="sym:0.3", seed=0)
    write_fashion_mnist(root / "test", split="test", limit=150)
    return root


@pytest.fixture(scope="module")
def own_ray(data, tmp_path_factory) -> dict:
    """Each function that starts a Ray of its own when the caller has none, in one window
    without the session's Ray (stopped and started again once, not three times): ``jumpray.clean``,
    ``jumpray score`` through the CLI with the clean run's logged model, ``jumpray.tune_sweep``.
    Returns their results and whether a Ray was left up after each."""
    uri = f"sqlite:///{data / 'mlflow.db'}"
    with no_caller_ray():
        result = jumpray.clean(
            data / "train",
            data / "clean",
            config="smoke",
            test_shards=data / "test",
            tracking=_tracking(uri),
            **TINY,
        )
        runs = {"cleaned": (result, uri, _ray_up())}
        out = data / "score-run"
        args = ["score", "--shards", str(data / "test"), "--checkpoint", result.model_uri]
        runs["score_code"] = main([*args, "--out", str(out), f"tracking.uri={uri}"])
        runs["score_out"], runs["ray_up_after_score"] = out, _ray_up()
        runs["tuned"] = jumpray.tune_sweep(
            data / "train",
            tmp_path_factory.mktemp("tune"),
            config="smoke",
            tune={
                "searcher": "grid",
                "num_samples": 1,
                "grace_period": 1,
                "search_space": {"jump.interval": {"grid": [1]}},
            },
            tracking={"enabled": False},
        )
        runs["ray_up_after_tune"] = _ray_up()
    return runs


@pytest.fixture(scope="module")
def cleaned(own_ray):
    """``jumpray.clean`` with no caller-started Ray: it starts one and shuts it down."""
    return own_ray["cleaned"]


def test_clean_without_a_caller_ray_returns_its_outputs(cleaned):
    result, uri, ray_left_up = cleaned
    assert not ray_left_up  # the Ray it started is shut down
    assert isinstance(result, jumpray.CleanResult)
    labels = result.labels
    assert labels.num_rows == 400 == result.summary["num_samples"]
    assert sum(labels.column("is_label_issue").to_pylist()) == result.summary["num_label_issues"]
    assert result.run_id and result.tracking_uri == uri
    assert result.model_uri == f"runs:/{result.run_id}/model"
    assert read_index(result.clean_shards).num_samples == result.summary["num_kept"]

    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"


def _probs_of(table) -> tuple[np.ndarray, np.ndarray]:
    """(given, pred_probs) rebuilt from the label table's columns (C = 10 <= score.top_k: the
    top-k columns hold every class), rows in idx order."""
    table = table.sort_by("idx")
    n = table.num_rows
    assert table.column("idx").to_pylist() == list(range(n))
    given = np.asarray(table.column("given_label").to_pylist())
    top_labels = np.asarray(table.column("top_labels").to_pylist())
    top_probs = np.asarray(table.column("top_probs").to_pylist(), dtype=np.float64)
    probs = np.zeros((n, 10))
    np.put_along_axis(probs, top_labels, top_probs, axis=1)
    probs[np.arange(n), given] = table.column("prob_given").to_numpy()  # float64 there
    return given, probs


def test_find_label_issues_equals_the_clean_jobs_decision(cleaned):
    result, _, _ = cleaned
    table = result.labels.sort_by("idx")
    given, probs = _probs_of(table)
    flags = jumpray.find_label_issues(given, probs)
    expected = np.asarray(table.column("is_label_issue").to_pylist())
    assert expected.sum() > 0
    np.testing.assert_array_equal(flags, expected)
    rank = np.asarray(table.column("rank").fill_null(0).to_pylist())
    ranked = jumpray.rank_label_issues(given, probs)
    np.testing.assert_array_equal(rank[ranked], np.arange(1, expected.sum() + 1))


def _scorer_probs(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    """The probabilities ``jumpray score`` computes with the checkpoint's final network."""
    from jumpray.checkpoint import load_checkpoint
    from jumpray.config import load_config
    from jumpray.score.pipeline import SnapshotSet, build_spec
    from jumpray.score.scorer import Scorer

    state = load_checkpoint(checkpoint)
    snaps = SnapshotSet(epochs=[0], refs=[], model_args=state["model_args"], data=state["data"])
    spec = build_spec(load_config(None, base=state["config"]), snaps)
    scorer = Scorer([state["model"]], spec, device="cpu")
    return scorer.score_snapshots(images, np.zeros(len(images), np.int64)).probs[0]


def test_the_logged_model_reproduces_the_scorers_probabilities(cleaned):
    import mlflow

    result, uri, _ = cleaned
    images = load_fashion_mnist("test", limit=64)[0][:, None]  # uint8 (64, 1, 28, 28)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    probs = model.predict(images)
    assert probs.shape == (64, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, _scorer_probs(result.checkpoint, images), atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    meta = model.metadata
    assert meta.metadata["class_names"] == list(FASHION_MNIST_CLASSES)
    assert meta.get_input_schema().inputs[0].type == np.dtype(np.uint8)
    version = mlflow.register_model(result.model_uri, "jumpray-test-api")
    assert int(version.version) == 1


def test_score_with_the_logged_model_with_and_without_a_caller_ray(
    cleaned, own_ray, data, ray_cluster
):
    result, uri, _ = cleaned
    # A registered version (the test above registered it), in the caller's Ray.
    scored = jumpray.score_shards(
        data / "test",
        data / "score-registered",
        checkpoint="models:/jumpray-test-api/1",
        tracking={"uri": uri},
    )
    assert ray_cluster.is_initialized()  # the caller's Ray stays up
    table = scored.labels.sort_by("idx")
    assert table.num_rows == 150 and scored.summary["decision"]["num_snapshots"] == 1
    # p(given) of the scored table is the MLflow model's probability of the given label.
    import mlflow

    mlflow.set_tracking_uri(uri)
    images = load_fashion_mnist("test", limit=150)[0][:, None]
    probs = mlflow.pyfunc.load_model(result.model_uri).predict(images)
    given = np.asarray(table.column("given_label").to_pylist())
    np.testing.assert_allclose(
        table.column("prob_given").to_numpy(), probs[np.arange(150), given], atol=1e-5
    )
    # The run's model through the CLI, with no Ray in the process (run by the own_ray fixture).
    assert own_ray["score_code"] == 0 and not own_ray["ray_up_after_score"]
    np.testing.assert_allclose(
        pq.read_table(own_ray["score_out"] / "labels.parquet")
        .sort_by("idx")
        .column("prob_given")
        .to_numpy(),
        table.column("prob_given").to_numpy(),
        atol=1e-6,
    )


def test_tune_without_a_caller_ray(own_ray):
    tuned = own_ray["tuned"]
    assert not own_ray["ray_up_after_tune"]
    assert isinstance(tuned, jumpray.TuneResult)
    assert tuned.sweep.complete and len(tuned.sweep.records) == 1
    assert tuned.best_config is not None and tuned.best_config.is_file()


def test_the_example_runs_on_a_tiny_subset(tmp_path, monkeypatch, ray_cluster):
    # In the session's Ray: the functions' own-Ray path is tested above (cleaned, tune); this is
    # also the caller's-Ray test of read_shards and train_model (one retrain, not two).
    for key, value in {
        "JUMPRAY_EXAMPLE_LIMIT": "200",
        "JUMPRAY_EXAMPLE_EPOCHS": "2",
        "JUMPRAY_EXAMPLE_CONFIG": "smoke",
        "JUMPRAY_EXAMPLE_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(key, value)
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert ray_cluster.is_initialized()  # the caller's Ray stays up
    result, retrained = namespace["result"], namespace["retrained"]
    assert result.summary["num_samples"] == 200
    assert namespace["probs"].shape == (8, 10)
    # read_shards and train_model in the caller's Ray, on the cleaned shards, tracked.
    assert jumpray.read_shards(result.clean_shards).dataset.count() == result.summary["num_kept"]
    assert isinstance(retrained, jumpray.TrainResult)
    assert retrained.summary["num_samples"] == result.summary["num_kept"]
    assert retrained.summary["epochs"] == 2 and retrained.checkpoint.is_dir()
    assert retrained.model_uri == f"runs:/{retrained.run_id}/model"
    assert (tmp_path / "retrain" / "train_summary.json").is_file()

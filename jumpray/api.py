"""jumpray's Python API: the commands as functions, the decision on arrays, shards for Ray Data.

Each function is a thin layer over what the CLI runs (docs/api.md):

- :func:`clean`, :func:`train`, :func:`score`, :func:`tune` call the job functions of
  ``jumpray clean`` / ``train`` / ``score`` / ``tune`` (:mod:`jumpray.jobs`) with a config built
  the way the CLI builds it, and return a small result object. ``jumpray.train``,
  ``jumpray.score`` and ``jumpray.tune`` are packages, so the package exports these three as
  :func:`train_model`, :func:`score_shards` and :func:`tune_sweep` (the same functions);
- :func:`find_label_issues` / :func:`rank_label_issues`: the clean job's decision
  (``score.decision``, :func:`jumpray.score.rules.decide_arrays`) on any model's probabilities;
- :func:`read_shards` / :func:`write_shards`: a shard folder as a Ray Dataset, and arrays or an
  image folder as a shard folder.

Ray: every function works inside the caller's Ray (``ray.init`` done first) and never shuts down a
Ray it did not start; without one, the jobs start a local Ray and shut it down when they end
(:func:`read_shards` leaves the Ray it started up: its dataset lives there).

Heavy modules (torch, Ray, MLflow, pyarrow) are imported inside the functions, so importing this
module stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np

from jumpray.storage import Location, is_uri, join, location, read_bytes

if TYPE_CHECKING:
    import pyarrow as pa

    from jumpray.config import RunConfig, ScoreConfig

__all__ = [
    "clean",
    "CleanResult",
    "find_label_issues",
    "rank_label_issues",
    "read_shards",
    "RunResult",
    "score",
    "score_shards",
    "ScoreResult",
    "train",
    "train_model",
    "TrainResult",
    "tune",
    "tune_sweep",
    "TuneResult",
    "write_shards",
]

# What the functions take for a config: a YAML file, a shipped config's short name, a RunConfig
# or a nested mapping; None = the defaults.
ConfigSource: TypeAlias = "str | Path | RunConfig | Mapping[str, Any] | None"

# The shard writers' module, named once: the data package may move them (one line to change).
WRITERS_MODULE = "jumpray.data.convert"
READER_MODULE = "jumpray.data.shards"


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(kw_only=True)
class RunResult:
    """What every command returns.

    Attributes:
        summary: the command's summary (the content of its summary file).
        out: OUT.
        run_id: the MLflow run (the parent run of a sweep), or None (not tracked).
        tracking_uri: the MLflow store of ``run_id``.
    """

    summary: dict[str, Any]
    out: Location
    run_id: str | None = None
    tracking_uri: str | None = None


@dataclass(kw_only=True)
class ScoreResult(RunResult):
    """What :func:`score` produced; ``summary`` is OUT/summary.json.

    Attributes:
        labels_path: OUT/labels.parquet (docs/contract.md, 'Files written by score and clean').
    """

    labels_path: Location

    @property
    def labels(self) -> pa.Table:
        """The label table, read from :attr:`labels_path` (a pyarrow Table; a local file or an
        object in storage)."""
        import io

        import pyarrow.parquet as pq

        if is_uri(self.labels_path):
            return pq.read_table(io.BytesIO(read_bytes(self.labels_path)))
        return pq.read_table(self.labels_path)


@dataclass(kw_only=True)
class TrainResult(RunResult):
    """What :func:`train` produced; ``summary`` is OUT/train_summary.json.

    Attributes:
        checkpoint: OUT/checkpoint (``jumpray score --checkpoint`` reads it).
        model_uri: the trained network as an MLflow model (``runs:/RUN_ID/model``), or None.
    """

    checkpoint: Location
    model_uri: str | None = None


@dataclass(kw_only=True)
class CleanResult(ScoreResult):
    """What :func:`clean` produced: a :class:`ScoreResult` plus the training's outputs.

    Attributes:
        checkpoint: OUT/checkpoint.
        model_uri: the trained network as an MLflow model (``runs:/RUN_ID/model``), or None.
        clean_shards: OUT/clean-shards (the kept samples), or None without ``write_shards``.
    """

    checkpoint: Location
    model_uri: str | None = None
    clean_shards: Location | None = None


@dataclass(kw_only=True)
class TuneResult(RunResult):
    """What :func:`tune` produced; ``summary`` holds the sweep's numbers (trial counts, the
    metric's spread, ...).

    Attributes:
        best_config: OUT/best.yaml (``jumpray.clean(..., config=best_config)``), or None when no
            trial reported the metric.
        best: the best trial (params, metrics), or None.
        sweep: the full :class:`jumpray.tune.sweep.SweepResult`.
    """

    best_config: Path | None
    best: dict[str, Any] | None = None
    sweep: Any = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------
# Configs


def _nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword overrides as a nested mapping: ``train__epochs=2`` and ``train={"epochs": 2}``
    both give ``{"train": {"epochs": 2}}``."""
    from jumpray.config import merge_settings

    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, last = key.split("__")
        node: dict[str, Any] = {last: value}
        for parent in reversed(parents):
            node = {parent: node}
        tree = merge_settings(tree, node)
    return tree


def _config_parts(config: Any, overrides: Mapping[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """(a YAML path or None, the nested overrides): ``config`` as the CLI takes it.

    Raises:
        TypeError: ``config`` of another type.
    """
    from jumpray.config import RunConfig, merge_settings, resolve_config_path

    extra = _nested(overrides)
    if config is None:
        return None, extra
    if isinstance(config, str | Path):
        return resolve_config_path(config), extra
    if isinstance(config, RunConfig):
        return None, merge_settings(config.model_dump(), extra)
    if isinstance(config, Mapping):
        return None, merge_settings(dict(config), extra)
    raise TypeError(
        f"config must be a YAML path, a shipped config's name, a RunConfig or a mapping; got "
        f"{type(config).__name__}"
    )


def _load(config: Any, overrides: Mapping[str, Any]) -> RunConfig:
    from jumpray.config import load_config

    path, extra = _config_parts(config, overrides)
    return load_config(path, extra)


def _loc(value: str | Path) -> Location:
    """A folder argument: an object-storage URI kept as text, a local path as a Path."""
    return location(str(value))


def _opt_path(value: str | Path | None) -> Location | None:
    return None if value is None else _loc(value)


# Summary entries the jobs return for the CLI's console lines only.
_CONSOLE_ONLY = ("log_path", "tracker")


def _run_job(
    job: Any, cfg: Any, shards: Any, out: Location, test_shards: Any, **kwargs: Any
) -> dict[str, Any]:
    """``job(cfg, shards=, out=, test_shards=, **kwargs)`` with the paths as the CLI passes them;
    returns the job's summary without its console-only entries."""
    result = job(cfg, shards=_loc(shards), out=out, test_shards=_opt_path(test_shards), **kwargs)
    return {k: v for k, v in result.items() if k not in _CONSOLE_ONLY}


# ---------------------------------------------------------------------------------------------
# The commands


def clean(
    shards: str | Path,
    out: str | Path,
    *,
    config: ConfigSource = None,
    write_shards: bool = True,
    overwrite: bool = False,
    verbose: bool = False,
    test_shards: str | Path | None = None,
    address: str | None = None,
    **overrides: Any,
) -> CleanResult:
    """Train, score, decide and write: ``jumpray clean`` (docs/contract.md).

    Args:
        shards: the shard folder to clean.
        out: the output folder (refused when not empty, unless ``overwrite`` or it is this
            command's own unfinished run, which is then resumed).
        config: a YAML file, a shipped config's short name, a :class:`~jumpray.config.RunConfig`
            or a nested mapping; None = the defaults.
        test_shards: clean test shards (test accuracy).
        write_shards: write OUT/clean-shards (the kept samples), as ``--write-shards``.
        address: a Ray cluster to join when no Ray runs in this process.
        overwrite: replace an earlier output in ``out``.
        verbose: leave Ray's output on the console (False: OUT/logs/).
        **overrides: config values, ``train__epochs=2`` or ``train={"epochs": 2}`` (the CLI's
            ``train.epochs=2``), applied over ``config``.

    Returns:
        A :class:`CleanResult`.

    Raises:
        ConfigError: a bad config value (every problem listed).
        DataError, UsageError: bad shards or output folder (the message names the fix).
    """
    from jumpray.jobs.clean import CLEAN_SHARDS, run_clean
    from jumpray.score.outputs import LABELS_FILE

    out = _loc(out)
    options = {"address": address, "overwrite": overwrite, "verbose": verbose}
    summary = _run_job(
        run_clean,
        _load(config, overrides),
        shards,
        out,
        test_shards,
        write_shards=write_shards,
        **options,
    )
    return CleanResult(
        summary=summary,
        out=out,
        labels_path=join(out, LABELS_FILE),
        run_id=summary.get("mlflow_run_id"),
        tracking_uri=summary.get("mlflow_tracking_uri"),
        model_uri=summary.get("mlflow_model_uri"),
        clean_shards=join(out, CLEAN_SHARDS) if write_shards else None,
        checkpoint=join(out, "checkpoint"),
    )


def train(
    shards: str | Path,
    out: str | Path,
    *,
    test_shards: str | Path | None = None,
    config: ConfigSource = None,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train on a shard folder with Ray Train: ``jumpray train`` (docs/contract.md).

    Args:
        shards: the training shard folder.
        out: the output folder.
        resume: continue the run recorded in ``out`` (``--resume``).
        config, test_shards, address, overwrite, verbose, **overrides: as in :func:`clean`.

    Returns:
        A :class:`TrainResult`; with tracking on, ``model_uri`` is the network as an MLflow
        model (``mlflow.pyfunc.load_model(model_uri).predict(uint8 images)`` gives probabilities).
    """
    from jumpray.jobs.train import run_train

    out = _loc(out)
    options = {"address": address, "overwrite": overwrite, "verbose": verbose}
    summary = _run_job(
        run_train, _load(config, overrides), shards, out, test_shards, resume=resume, **options
    )
    return TrainResult(
        summary=summary,
        out=out,
        checkpoint=join(out, "checkpoint"),
        run_id=summary.get("mlflow_run_id"),
        tracking_uri=summary.get("mlflow_tracking_uri"),
        model_uri=summary.get("mlflow_model_uri"),
    )


def score(
    shards: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path,
    test_shards: str | Path | None = None,
    config: ConfigSource = None,
    overwrite: bool = False,
    address: str | None = None,
    verbose: bool = False,
    **overrides: Any,
) -> ScoreResult:
    """Score every sample of a shard folder and decide: ``jumpray score`` (docs/contract.md).

    Args:
        shards: the shard folder to score.
        out: the output folder.
        checkpoint: a checkpoint folder (OUT/checkpoint of train or clean), or an MLflow model
            URI they logged (``runs:/RUN_ID/model``, ``models:/NAME/VERSION``; read from
            ``tracking.uri``), which scores as one snapshot.
        config: applied over the checkpoint's training config (as ``--config``).
        test_shards, address, overwrite, verbose, **overrides: as in :func:`clean`.

    Returns:
        A :class:`ScoreResult`.
    """
    from jumpray.jobs.score import run_score
    from jumpray.score.outputs import LABELS_FILE
    from jumpray.tracking import is_model_uri

    path, extra = _config_parts(config, overrides)
    out = _loc(out)
    paths = {"shards": _loc(shards), "out": out, "test_shards": _opt_path(test_shards)}
    options = {"address": address, "overwrite": overwrite, "verbose": verbose}
    model = str(checkpoint) if is_model_uri(checkpoint) else _loc(checkpoint)
    summary = run_score(checkpoint=model, config=path, overrides=extra, **paths, **options)
    summary = {k: v for k, v in summary.items() if k not in _CONSOLE_ONLY}
    return ScoreResult(summary=summary, out=out, labels_path=join(out, LABELS_FILE))


def tune(
    shards: str | Path,
    out: str | Path,
    *,
    config: ConfigSource = None,
    test_shards: str | Path | None = None,
    address: str | None = None,
    resume: bool = False,
    **overrides: Any,
) -> TuneResult:
    """A Ray Tune (ASHA) sweep, each trial a Ray Train run: ``jumpray tune`` (docs/contract.md).

    Args:
        shards: the training shard folder.
        out: the output folder (new or empty, or this sweep's with ``resume``).
        resume: continue the sweep in ``out`` with its saved config (no ``config``/overrides).
        config, test_shards, address, **overrides: as in :func:`clean`.

    Returns:
        A :class:`TuneResult`.
    """
    from jumpray.jobs.tune import run_tune

    path, extra = _config_parts(config, overrides)
    paths = {"shards": _loc(shards), "out": _loc(out), "test_shards": _opt_path(test_shards)}
    result = run_tune(config=path, overrides=extra, resume=resume, address=address, **paths)
    best = result.out / "best.yaml"
    return TuneResult(
        summary=dict(result.numbers),
        out=result.out,
        best_config=best if best.is_file() else None,
        best=result.best,
        run_id=result.parent_run_id,
        tracking_uri=result.tracking_uri,
        sweep=result,
    )


# The package-level names (jumpray.train, jumpray.score and jumpray.tune are packages).
train_model = train
score_shards = score
tune_sweep = tune


# ---------------------------------------------------------------------------------------------
# The decision on arrays


def _score_config(config: Any, options: Mapping[str, Any]) -> ScoreConfig:
    """The ``score`` section of ``config`` with the non-None ``options`` over it (validated)."""
    cfg = _load(config, {"score": {k: v for k, v in options.items() if v is not None}})
    return cfg.score


def _decide(given_labels: Any, pred_probs: Any, config: Any, options: dict[str, Any]) -> dict:
    from jumpray.score.rules import decide_arrays

    return decide_arrays(given_labels, pred_probs, _score_config(config, options))


def find_label_issues(
    given_labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    config: ConfigSource = None,
    decision: Literal["confident", "threshold"] | None = None,
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_joint"]
    | None = None,
    rank_by: Literal["self_confidence", "normalized_margin"] | None = None,
    min_examples_per_class: int | None = None,
    exclude_predicted_given: bool | None = None,
    threshold: float | None = None,
    formula: Literal["prob", "margin"] | None = None,
    top_k: int | None = None,
) -> np.ndarray:
    """Which given labels are probably wrong, decided as ``jumpray clean`` decides.

    The rule is ``score.decision`` (default ``confident``: confident learning with
    ``score.filter_by``, :mod:`jumpray.score.confident`) with the ``score.*`` values of
    ``config`` and the options given here, run on the rows the label table would hold for these
    probabilities (:func:`jumpray.score.rules.decide_arrays`). The clean job decides on the mean
    of its snapshots' probabilities; here any model's out-of-sample probabilities do.

    Args:
        given_labels: (N,) int in [0, C), the labels to check.
        pred_probs: (N, C) probabilities of each class (rows of softmax outputs).
        config: where the ``score.*`` defaults come from (as in :func:`clean`); None = the
            schema defaults.
        decision: ``confident`` or ``threshold`` (``score.decision``).
        filter_by, rank_by, min_examples_per_class, exclude_predicted_given: confident learning's
            ``score.*`` options.
        threshold, formula: the ``threshold`` decision's ``score.threshold`` and
            ``score.formula`` (``prob`` or ``margin`` on arrays).
        top_k: ``score.top_k``, the classes per row the decision reads (exact when C <= top_k).

    Returns:
        (N,) bool, True = label issue.

    Raises:
        ValueError: arrays of the wrong shape or range.
        ConfigError: an unknown option value (the message lists the valid ones).
    """
    options = {
        "decision": decision,
        "filter_by": filter_by,
        "rank_by": rank_by,
        "min_examples_per_class": min_examples_per_class,
        "exclude_predicted_given": exclude_predicted_given,
        "threshold": threshold,
        "formula": formula,
        "top_k": top_k,
    }
    return _decide(given_labels, pred_probs, config, options)["is_label_issue"]


def rank_label_issues(
    given_labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    config: ConfigSource = None,
    **options: Any,
) -> np.ndarray:
    """The label issues most suspicious first: the rows :func:`find_label_issues` flags, in the
    order of the label table's ``rank`` (lowest ``label_score`` first, ties to the lower row).

    Args:
        given_labels, pred_probs, config: as in :func:`find_label_issues`.
        **options: the options of :func:`find_label_issues` (``decision``, ``filter_by``,
            ``rank_by``, ...); an unknown one raises ConfigError listing the valid keys.

    Returns:
        (M,) int64 row positions, M = the number of issues.
    """
    rank = np.asarray(_decide(given_labels, pred_probs, config, options)["rank"])
    rows = np.flatnonzero(rank > 0)
    return rows[np.argsort(rank[rows], kind="stable")].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Shards


def read_shards(
    folder: str | Path,
    *,
    config: ConfigSource = None,
    address: str | None = None,
    **options: Any,
) -> Any:
    """A shard folder as a Ray Dataset of decoded rows, for your own Ray Data pipeline.

    Joins the running Ray; without one, starts a local Ray (or joins ``address`` /
    ``RAY_ADDRESS``) and leaves it up, since the dataset lives there (``ray.shutdown()`` when
    done).

    Args:
        folder: the shard folder (docs/contract.md).
        config: where the ``data.*`` settings come from (as in :func:`clean`).
        address: a Ray cluster to join when no Ray runs.
        **options: :func:`jumpray.data.shards.read_shards` keywords (``num_classes``,
            ``on_error``, ``image_size``, ``channels``, ``materialize``, ...).

    Returns:
        A :class:`jumpray.data.ShardSource`: ``.dataset`` is the Ray Dataset (columns of
        :mod:`jumpray.data.schema`: ``image`` uint8 (C, H, W), ``given_label``, ``idx``, ...),
        ``.info`` the folder's description (classes, image size, counts).
    """
    from jumpray.ray_utils import init_ray

    cfg = _load(config, {})
    init_ray(address=address or cfg.scaling.address)
    reader = importlib.import_module(READER_MODULE)
    return reader.read_shards(_loc(folder), cfg.data, **options)


def write_shards(
    out: str | Path,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    folder: str | Path | None = None,
    list_file: str | Path | None = None,
    root: str | Path | None = None,
    **options: Any,
) -> Any:
    """Write a shard folder (docs/contract.md) from arrays, an image folder or a list file.

    Exactly one source: ``images`` and ``labels`` (``jumpray.data`` ``write_arrays``),
    ``folder`` (``folder/<class name>/<image>``, as ``jumpray shards from-folder``), or
    ``list_file`` with ``root`` (``relpath label`` lines, as ``jumpray shards from-list``).
    No Ray is needed.

    Args:
        out: the shard folder to create.
        images: uint8 (N, H, W) gray or (N, H, W, 3) RGB.
        labels: (N,) int given labels (with ``noise``, the clean labels).
        folder: an image-folder tree.
        list_file, root: a list file and the folder its paths are relative to.
        **options: the writer's keywords (``noise``, ``seed``, ``class_names``,
            ``clean_labels``, ``max_samples_per_shard``, ``overwrite``, ...).

    Returns:
        The :class:`jumpray.data.ShardIndex` written (index.json).

    Raises:
        ValueError: no source or more than one.
    """
    given = [images is not None, folder is not None, list_file is not None]
    if sum(given) != 1:
        raise ValueError(
            "write_shards: give exactly one source: images= and labels=, folder=, or "
            f"list_file= (with root=); got {sum(given)}"
        )
    writers = importlib.import_module(WRITERS_MODULE)
    if folder is not None:
        return writers.write_from_folder(folder, out=out, **options)
    if list_file is not None:
        if root is None:
            raise ValueError("write_shards: list_file= needs root=, the folder its paths are in")
        return writers.write_from_list(list_file, root=root, out=out, **options)
    if labels is None:
        raise ValueError("write_shards: images= needs labels=, one int label per image")
    return writers.write_arrays(out, images, labels, **options)

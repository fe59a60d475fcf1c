"""Typed run configuration: one schema, YAML files under ``configs/``, dotted CLI overrides.

The schema is pydantic with unknown keys forbidden everywhere, so a typo such as
``selection.tua=0.01`` fails at load instead of being ignored. :func:`load_config` collects every
problem (bad YAML key, wrong type, out-of-range value, invalid combination) and raises one
:class:`~jumpray.errors.ConfigError` that lists them all, each with its dotted key.

Every constant of the method is a config value (docs/method.md, 'Settings', lists the official
ones): K (``model.semantic_dim``), tau (``selection.tau``), T (``selection.temperature``), J
(``jump.interval``), warm-up (``jump.warmup_epochs``), Beta alpha (``selection.beta_alpha``),
blend on/off (``selection.blend``) and the clean rule (``selection.rule``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jumpray.errors import ConfigError

__all__ = [
    "RunConfig",
    "load_config",
    "parse_overrides",
    "apply_overrides",
    "config_to_flat_dict",
    "load_yaml",
    "merge_settings",
    "SHIPPED_CONFIGS",
    "FASHION_MNIST_CONFIG",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MethodConfig(_Strict):
    """Which learning method runs, and the baselines' own constants (their papers' defaults)."""

    name: Literal["jumpteaching", "ce", "coteaching", "jocor"] = "jumpteaching"
    forget_rate: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Co-teaching/JoCoR: final fraction dropped; null = the data's noise rate",
    )
    num_gradual: int = Field(
        10, ge=0, description="Co-teaching/JoCoR: epochs to ramp the forget rate (Tk)"
    )
    exponent: float = Field(1.0, gt=0, description="Co-teaching/JoCoR: ramp exponent c")
    co_lambda: float = Field(
        0.9, ge=0.0, le=1.0, description="JoCoR: weight of the co-regularization term"
    )


class JumpConfig(_Strict):
    """The jump: the flag that gates a sample at visit v was written at visit v - interval."""

    interval: int = Field(
        1, ge=1, description="J, in visits (= epochs); 1 is the reference behaviour"
    )
    warmup_epochs: int = Field(2, ge=0, description="epochs on all samples before selection starts")


class SelectionConfig(_Strict):
    """The clean rule and the semantic loss (docs/method.md, 'Clean rule')."""

    rule: Literal["reference", "guarded"] = "reference"
    tau: float = Field(1e-3, gt=0, description="variance threshold on the K per-bit losses")
    max_mean_bit_loss: float = Field(
        0.5,
        gt=0,
        description="guarded rule: the variance test also needs mean bit loss below this (ln 2 = 0.693 is an all-zero head)",
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="T: logits are divided by T for CE and the argmax test (official code: 2)",
    )
    blend: bool = Field(
        False,
        description="selection phase: input = lam*weak + (1-lam)*strong view (official code: on)",
    )
    beta_alpha: float = Field(
        5.0, gt=0, description="lam ~ Beta(alpha, alpha), lam = max(lam, 1-lam)"
    )
    code_clamp: float = Field(
        1e-4, gt=0, lt=0.5, description="semantic output clamped to [-1+c, 1-c]"
    )
    class_floor: float = Field(
        1.2,
        ge=0.0,
        description=(
            "after each epoch, every given class keeps at least class_floor x the overall "
            "clean-flag fraction, topped up by p(given label) from the same forward; "
            "0 = off (the official code)"
        ),
    )


class ModelConfig(_Strict):
    """The two-head network: backbone + classifier head (C) + semantic head (K bits)."""

    backbone: str = Field(
        "tiny_cnn", description="a registered backbone name (see jumpray.models.list_backbones)"
    )
    semantic_dim: int = Field(32, ge=2, description="K, a power of two with C <= 2K")
    semantic_hidden: int | None = Field(
        None, ge=1, description="hidden width of the semantic MLP; null = backbone feature dim"
    )
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    pretrained: bool = Field(
        False, description="ImageNet weights for resnet50 (needs internet the first time)"
    )

    @model_validator(mode="after")
    def _power_of_two(self) -> ModelConfig:
        k = self.semantic_dim
        if k & (k - 1):
            lower = 1 << (k.bit_length() - 1)
            raise ValueError(
                f"model.semantic_dim must be a power of two, got {k} (try {lower} or {lower * 2})"
            )
        return self


# Where each kind of address takes its credentials from instead (never the config: it is logged,
# saved in OUT and recorded as MLflow params).
_CREDENTIALS_FROM = {
    "uri": "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN",
    "storage_path": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the machine's role)",
    "address": "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH with RAY_AUTH_MODE=token",
}


def _no_credentials(value: str | None, key: str) -> str | None:
    """``value`` unless it is a URI with a user name or password in it (``scheme://user:pw@``).
    The message does not repeat the value."""
    if value and "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
        raise ValueError(
            f"holds credentials (user:password@); remove them and set {_CREDENTIALS_FROM[key]} "
            "in the environment"
        )
    return value


class TrainConfig(_Strict):
    """Optimisation, tuned for the small CPU demo (official: docs/method.md, 'Settings')."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(
        128,
        ge=1,
        description="per worker; under Ray Train the global batch is batch_size x num_workers",
    )
    eval_batch_size: int = Field(512, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    scheduler: Literal["cosine", "none"] = "cosine"
    eta_min: float = Field(5e-4, ge=0.0)
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="GPU only: auto = bf16 if supported"
    )
    channels_last: bool = Field(True, description="GPU only")
    num_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads per process; null = auto: local runs all cores; a Ray Train "
        "worker the node's CPUs / its workers once the rows are in the object store, else what "
        "its reserved CPUs give (jumpray.ray_utils.torch_threads)",
    )


class DataConfig(_Strict):
    """Decoding, augmentation and the bad-sample policy."""

    on_error: Literal["raise", "skip"] = "raise"
    max_quarantine_fraction: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="fail when more than this fraction of a folder's samples are unusable "
        "(quarantined); 1 accepts any loss",
    )
    image_size: int | None = Field(
        None,
        ge=8,
        description="resize to this square size; null = keep the size when every image has it, "
        "else a size chosen from the data (the log and summary say which)",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="force gray (1) or RGB (3); null = from the data"
    )
    mean: list[float] | None = Field(
        None, description="per-channel normalisation mean; null = from the data's index or 0.5"
    )
    std: list[float] | None = None
    augment: Literal["auto", "small", "large", "none"] = Field(
        "auto", description="weak/strong view recipe; auto picks by image size"
    )
    strong_magnitude: int = Field(
        5, ge=1, le=30, description="RandAugment-style magnitude of the strong view"
    )
    materialize: bool = Field(
        True,
        description="Ray Data: cache decoded shards in the object store when they fit; Ray "
        "Train workers then keep their rows in memory and use the free cores",
    )
    read_parallelism: int | None = Field(None, ge=1)
    shuffle_buffer: int = Field(
        2048,
        ge=0,
        description="Ray Train: rows in each worker's local shuffle buffer; 0 = read order",
    )
    preserve_order: bool = Field(
        False,
        description="reproducibility checks (slower): deterministic Ray Data row order and, "
        "with train.num_threads null, 1 torch thread (results depend on the thread count)",
    )


class ScalingConfig(_Strict):
    """Ray Train resources. On a 2-core box, leave one CPU for Ray Data.

    Why: docs/architecture.md, 'Ray notes: CPU starvation'.
    """

    num_workers: int = Field(
        1, ge=0, description="Ray Train workers; 0 = run in the driver process"
    )
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.5, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0)
    address: str | None = Field(
        None, description="Ray cluster address; null = RAY_ADDRESS or a local Ray"
    )
    max_failures: int = Field(
        2, ge=0, description="FailureConfig: restarts from the last checkpoint"
    )
    storage_path: str | None = Field(
        None, description="Ray Train storage; null = <out>/ray_results"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK",
        description="Ray Train workers' placement group: PACK fills a node first; "
        "STRICT_SPREAD puts each worker on its own node",
    )

    @field_validator("address", "storage_path")
    @classmethod
    def _refuse_credentials(cls, value: str | None, info: Any) -> str | None:
        return _no_credentials(value, info.field_name)


class SnapshotConfig(_Strict):
    """Prior-model snapshots kept in the object store (docs/architecture.md, 'Distributed state')."""

    keep: int = Field(3, ge=1, description="R, the last R epochs' weights are kept (R >= J + 1)")


class ScoreConfig(_Strict):
    """Per-sample scoring with prior snapshots and the label decision (the clean job)."""

    decision: Literal["threshold", "confident"] = Field(
        "confident",
        description="how is_label_issue is decided (jumpray.score.rules.DECISION_RULES): "
        "threshold = label_score < score.threshold; confident = confident learning "
        "(per-class thresholds, calibrated confident joint, score.filter_by)",
    )
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_joint"] = Field(
        "prune_by_noise_rate",
        description="decision=confident: which samples the estimated noise counts remove "
        "(jumpray.score.confident.FILTERS)",
    )
    rank_by: Literal["self_confidence", "normalized_margin"] = Field(
        "self_confidence",
        description="decision=confident: the label_score and the order of the issues (rank)",
    )
    min_examples_per_class: int = Field(
        1, ge=0, description="decision=confident: each given class keeps at least this many"
    )
    exclude_predicted_given: bool = Field(
        True,
        description="decision=confident: a sample whose argmax is its given label is never an issue",
    )
    top_k: int = Field(
        10,
        ge=2,
        description="the label table keeps each sample's top_k most probable classes and their "
        "probabilities (exact confident learning when C <= top_k; see jumpray.score.confident)",
    )
    source: Literal["auto", "snapshots", "training", "both"] = Field(
        "auto",
        description="the probabilities the decision reads: auto = both when the scored shards "
        "are the ones the checkpoint was trained on and it holds their history (clean), else "
        "snapshots; snapshots = a scoring pass with the "
        "last score.num_snapshots snapshots; training = the running mean recorded during "
        "Jump-teaching training (no forward pass; jumpray.core.history); both = their average",
    )
    history_from_epoch: int = Field(
        0, ge=0, description="training history: the first epoch whose probabilities count"
    )
    history_ema: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="training history: 0 = mean over the counted epochs; in (0, 1) = "
        "exponential moving average with this decay (recent epochs weigh more)",
    )
    num_snapshots: int = Field(
        3, ge=1, description="how many of the last snapshots score each sample"
    )
    formula: Literal["prob", "margin", "semantic", "bitloss", "rule", "blend"] = Field(
        "prob",
        description="per-snapshot label score (jumpray.score.decide.SCORE_FORMULAS); "
        "default chosen by measured F1, see decide.py",
    )
    combine: Literal["mean", "vote"] = Field(
        "mean",
        description="mean of the snapshots' scores, or the fraction of snapshots scoring >= 0.5",
    )
    threshold: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="is_label_issue = label_score < threshold (0.1: measured, see decide.py)",
    )
    confident_prob: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="noise-matrix estimate: only samples whose predicted class has at least "
        "this mean probability are counted",
    )
    batch_size: int = Field(512, ge=1)
    num_actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(0.5, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)


class CleanConfig(_Strict):
    """What the clean job writes."""

    relabel: bool = Field(
        False,
        description="--write-shards: a flagged sample is kept with the predicted label when its "
        "mean probability is >= relabel_min_prob (and it differs); other flagged ones are dropped",
    )
    relabel_min_prob: float = Field(
        0.9, gt=0.0, le=1.0, description="the relabel rule's minimum predicted-class probability"
    )
    gallery_size: int = Field(36, ge=0)


class TuneConfig(_Strict):
    """``jumpray tune``: Ray Tune over dotted config keys, ASHA on the epoch (jumpray/tune/)."""

    searcher: Literal["grid", "random", "optuna"] = Field(
        "random",
        description="grid: every grid/choice value; random: draws (grid keys crossed); "
        "optuna: TPE (optional extra, grid keys become choices)",
    )
    num_samples: int = Field(
        8, ge=1, description="trials drawn (grid/random: repeats of the grid points)"
    )
    metric: str = Field(
        "val_accuracy",
        description="what ranks trials: val_accuracy (noisy held-out split, needs no clean "
        "labels; chosen by measurement, see README), or any reported metric",
    )
    mode: Literal["max", "min"] = "max"
    val_fraction: float = Field(
        0.1, gt=0.0, lt=0.5, description="seeded, stratified held-out share of the noisy data"
    )
    epochs: int | None = Field(
        None, ge=1, description="per-trial budget in epochs (ASHA max_t); null = train.epochs"
    )
    time_budget_s: float | None = Field(
        None, gt=0, description="stop starting trials after this many seconds; null = no limit"
    )
    max_concurrent_trials: int | None = Field(
        None,
        ge=1,
        description="null = as many as the cluster fits while leaving Ray Data one CPU",
    )
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/reduction_factor per rung")
    max_failures: int = Field(
        1, ge=0, description="retries of a failed trial (it resumes from its checkpoint)"
    )
    search_space: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted key -> {grid|choice|loguniform|uniform: ...}; empty = the default "
        "space (J, K, tau, lr)",
    )


class TrackingConfig(_Strict):
    """MLflow. A tracking failure warns and never stops a run unless strict; records an outage
    held back are sent later or saved to OUT/mlflow_pending/ (docs/architecture.md, 'Tracking
    outages')."""

    enabled: bool = True
    uri: str | None = Field(None, description="null = MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    experiment: str = "jumpray"
    run_name: str | None = None
    strict: bool = False
    flush_timeout_s: float = Field(
        30.0,
        ge=0,
        description="at the end of a run, how long to wait for a server that went away during "
        "it before saving the unsent records to OUT/mlflow_pending/",
    )
    max_pending: int = Field(
        1000, ge=1, description="records held in memory during an outage; more go to the file"
    )

    @field_validator("uri")
    @classmethod
    def _refuse_credentials(cls, value: str | None, info: Any) -> str | None:
        return _no_credentials(value, info.field_name)


class RunConfig(_Strict):
    """The root of every jumpray configuration."""

    seed: int = 0
    num_classes: int | None = Field(None, ge=2, description="null = from the shards' index.json")
    method: MethodConfig = MethodConfig()
    jump: JumpConfig = JumpConfig()
    selection: SelectionConfig = SelectionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    scaling: ScalingConfig = ScalingConfig()
    snapshots: SnapshotConfig = SnapshotConfig()
    score: ScoreConfig = ScoreConfig()
    clean: CleanConfig = CleanConfig()
    tune: TuneConfig = TuneConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        problems = []
        if self.snapshots.keep < self.jump.interval + 1:
            problems.append(
                f"snapshots.keep: {self.snapshots.keep} is below jump.interval + 1 = {self.jump.interval + 1} "
                f"(set snapshots.keep={self.jump.interval + 1} or more)"
            )
        if self.score.num_snapshots > self.snapshots.keep:
            problems.append(
                f"score.num_snapshots: {self.score.num_snapshots} is more than snapshots.keep = {self.snapshots.keep}"
            )
        if self.score.history_from_epoch >= self.train.epochs and self.score.source not in (
            "snapshots",
            "auto",
        ):
            problems.append(
                f"score.history_from_epoch: {self.score.history_from_epoch} >= train.epochs = "
                f"{self.train.epochs}, so score.source={self.score.source} has no training "
                "probabilities; lower it"
            )
        if self.jump.warmup_epochs >= self.train.epochs and self.method.name == "jumpteaching":
            problems.append(
                f"jump.warmup_epochs: {self.jump.warmup_epochs} >= train.epochs = {self.train.epochs}, so selection never "
                "starts (the official Food-101 setting has this bug); lower it"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ---------------------------------------------------------------------------------------------
# Loading, overrides, flattening


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``key.sub=value`` strings into a nested dict; values are read as YAML scalars.

    Raises:
        ConfigError: listing every item that is not ``key=value``.
    """
    nested: dict[str, Any] = {}
    problems = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"{item!r}: an override is key.sub=value (for example train.epochs=5)")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(nested, key, value)
    if problems:
        raise ConfigError(problems)
    return nested


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def merge_settings(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``extra`` merged in, section by section (``extra`` wins)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "search_space":
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _format_errors(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in e["loc"][:-1])
            msg = f"unknown key (allowed: {', '.join(_allowed_keys(parent))})"
        elif e["type"] == "literal_error":
            msg = f"got {e.get('input')!r}; {msg.lower()}"
        lines.append(f"{key}: {msg}")
    return lines


def _allowed_keys(parent: str) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in [p for p in parent.split(".") if p]:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


# The configs shipped with the package (``jumpray/configs`` links to the repository's configs/
# and is installed as package data), so ``--config clothing1m`` works from any directory.
SHIPPED_CONFIGS = Path(__file__).parent / "configs"
# The Fashion-MNIST settings of `jumpray local`, the demo and the bench, written only there.
FASHION_MNIST_CONFIG = SHIPPED_CONFIGS / "fashion_mnist.yaml"


def shipped_config_names() -> list[str]:
    """The short names ``--config`` accepts (the YAML files shipped with jumpray)."""
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """A config file: ``name`` itself when it is a file, else a shipped config of that short name.

    ``--config clothing1m``, ``--config clothing1m.yaml`` and ``--config configs/clothing1m.yaml``
    all name the shipped file when no such file exists in the working directory.

    Raises:
        ConfigError: neither exists (the message lists the shipped names).
    """
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = SHIPPED_CONFIGS / f"{stem}.yaml"
    if path.parent in (Path("."), Path("configs")) and shipped.is_file():
        return shipped
    raise ConfigError(
        f"--config {name}: no such file, and not a shipped config "
        f"(shipped: {', '.join(shipped_config_names())})"
    )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML config file (or a shipped config's short name) into a dict (empty = {})."""
    path = resolve_config_path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    *,
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build a :class:`RunConfig` from defaults, an optional YAML file and overrides.

    Precedence, lowest first: schema defaults, ``base`` (a job's own defaults), the YAML file, the
    overrides.

    Args:
        path: a YAML file; None uses only the schema defaults and ``base``.
        overrides: ``key.sub=value`` strings, or an already nested mapping.
        base: extra defaults applied before the file (for example the demo's settings).

    Raises:
        ConfigError: listing every problem at once.
    """
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        tree = merge_settings(tree, load_yaml(path))
    extra = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    tree = merge_settings(tree, extra)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def apply_overrides(cfg: RunConfig, overrides: Iterable[str] | Mapping[str, Any]) -> RunConfig:
    """Return a new config with the overrides applied on top of ``cfg`` (validated again)."""
    return load_config(None, overrides, base=cfg.model_dump())


def config_to_flat_dict(cfg: RunConfig) -> dict[str, Any]:
    """Flatten to ``{"train.epochs": 10, ...}`` for MLflow params and Tune spaces."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and not prefix.endswith("search_space"):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = node

    walk("", cfg.model_dump())
    return flat

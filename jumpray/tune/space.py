"""Search spaces over dotted config keys: YAML in, Ray Tune distributions out.

A space maps a dotted key of :class:`~jumpray.config.RunConfig` to one dimension::

    tune:
      search_space:
        jump.interval: {choice: [1, 2, 3, 4]}
        model.semantic_dim: {grid: [16, 32]}
        selection.tau: {loguniform: [1.0e-4, 1.0e-2]}
        train.lr: {uniform: [0.01, 0.1]}

Kinds (:data:`KINDS`): ``grid`` (every value, crossed with the other grid keys), ``choice`` (one
value drawn per trial), ``loguniform`` and ``uniform`` (``[low, high]``). The searcher changes
what the discrete kinds mean (:func:`to_param_space`): ``grid`` expands choices too; Optuna cannot
take a grid, so grids become choices there.

An empty space is :func:`default_space`: J in {1, 2, 3, 4}; K = every power of two with
C <= 2K, up to 128; tau and lr log-uniform around their defaults.

A trial's config is the base config with the trial's values (:func:`trial_config`);
``snapshots.keep`` follows J (R >= J + 1 is required) unless the space sets it, and the per-trial
budget ``tune.epochs`` replaces ``train.epochs``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jumpray.config import RunConfig, apply_overrides, config_to_flat_dict
from jumpray.errors import ConfigError

__all__ = [
    "KINDS",
    "Dimension",
    "parse_space",
    "default_space",
    "semantic_dims",
    "space_for",
    "to_param_space",
    "trial_config",
    "count_trials",
    "nest",
    "plain_values",
]

KINDS = ("grid", "choice", "loguniform", "uniform")
# Keys a trial may not change: they describe the sweep or the cluster, not the model.
FIXED_SECTIONS = ("tune", "tracking", "scaling")
MAX_SEMANTIC_DIM = 128


@dataclass(frozen=True)
class Dimension:
    """One searched key.

    Attributes:
        key: the dotted config key, e.g. ``train.lr``.
        kind: one of :data:`KINDS`.
        values: the values (grid/choice) or ``(low, high)`` (loguniform/uniform).
    """

    key: str
    kind: str
    values: tuple[Any, ...]

    @property
    def discrete(self) -> bool:
        return self.kind in ("grid", "choice")


def semantic_dims(num_classes: int, *, largest: int = MAX_SEMANTIC_DIM) -> list[int]:
    """Every K that codes C classes: powers of two with C <= 2K, up to ``largest``.

    Raises:
        ConfigError: no such K (C > 2 x largest).
    """
    dims, k = [], 2
    while k <= largest:
        if num_classes <= 2 * k:
            dims.append(k)
        k *= 2
    if not dims:
        raise ConfigError(
            f"model.semantic_dim: {num_classes} classes need K >= {math.ceil(num_classes / 2)}, "
            f"above the default space's {largest}; give tune.search_space a model.semantic_dim"
        )
    return dims


def default_space(num_classes: int) -> dict[str, Dimension]:
    """The space searched when ``tune.search_space`` is empty (the issue's J, K, tau, lr)."""
    return {
        "jump.interval": Dimension("jump.interval", "choice", (1, 2, 3, 4)),
        "model.semantic_dim": Dimension(
            "model.semantic_dim", "choice", tuple(semantic_dims(num_classes))
        ),
        "selection.tau": Dimension("selection.tau", "loguniform", (1e-4, 1e-2)),
        "train.lr": Dimension("train.lr", "loguniform", (1e-2, 1e-1)),
    }


def parse_space(raw: Mapping[str, Any], base: RunConfig) -> dict[str, Dimension]:
    """Check a YAML space against the schema and return its dimensions.

    Every discrete value is applied to ``base`` once, so a bad value (K not a power of two, an
    unknown method name) fails here, not hours later in a trial.

    Raises:
        ConfigError: listing every problem, each with its key.
    """
    known = config_to_flat_dict(base)
    problems: list[str] = []
    dims: dict[str, Dimension] = {}
    for key, spec in raw.items():
        where = f"tune.search_space.{key}"
        if key not in known or key.split(".")[0] in FIXED_SECTIONS:
            problems.append(f"{where}: not a config key a trial can change ({_near(key, known)})")
            continue
        if not isinstance(spec, Mapping) or len(spec) != 1:
            problems.append(f"{where}: write one of {{{'|'.join(KINDS)}: ...}}, got {spec!r}")
            continue
        kind, values = next(iter(spec.items()))
        dim, problem = _dimension(key, kind, values)
        if problem:
            problems.append(f"{where}.{kind}: {problem}")
            continue
        problems += _check_values(dim, base)
        dims[key] = dim
    if problems:
        raise ConfigError(problems)
    return dims


def _near(key: str, known: Mapping[str, Any]) -> str:
    section = key.split(".")[0]
    options = sorted(
        k for k in known if k.startswith(f"{section}.") and section not in FIXED_SECTIONS
    )
    if options:
        return "keys of this section: " + ", ".join(options)
    sections = sorted({k.split(".")[0] for k in known} - set(FIXED_SECTIONS))
    return "sections: " + ", ".join(sections)


def _dimension(key: str, kind: Any, values: Any) -> tuple[Dimension, str | None]:
    if kind not in KINDS:
        return Dimension(key, "", ()), f"unknown kind (choose from {', '.join(KINDS)})"
    if not isinstance(values, list | tuple) or not values:
        return Dimension(key, kind, ()), f"needs a non-empty list, got {values!r}"
    if kind in ("grid", "choice"):
        return Dimension(key, kind, tuple(values)), None
    if len(values) != 2 or not all(_is_number(v) for v in values):
        return Dimension(key, kind, ()), f"needs [low, high] numbers, got {values!r}"
    low, high = float(values[0]), float(values[1])
    if not low < high:
        return Dimension(key, kind, ()), f"low {low} must be below high {high}"
    if kind == "loguniform" and low <= 0:
        return Dimension(key, kind, ()), f"low must be > 0 on a log scale, got {low}"
    return Dimension(key, kind, (low, high)), None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_values(dim: Dimension, base: RunConfig) -> list[str]:
    """Apply each discrete value (or both ends of a range) to ``base``; collect the errors."""
    problems = []
    for value in dim.values:
        try:
            trial_config(base, {dim.key: value})
        except ConfigError as exc:
            problems.append(f"tune.search_space.{dim.key}: value {value!r}: {exc}")
    return problems


def space_for(base: RunConfig, *, num_classes: int) -> dict[str, Dimension]:
    """``tune.search_space`` parsed, or :func:`default_space` when it is empty."""
    raw = base.tune.search_space
    space = parse_space(raw, base) if raw else default_space(num_classes)
    k = space.get("model.semantic_dim")
    if k is not None and k.discrete:
        bad = [v for v in k.values if num_classes > 2 * int(v)]
        if bad:
            raise ConfigError(
                f"tune.search_space.model.semantic_dim: {bad} cannot code {num_classes} classes "
                f"(C <= 2K); use values from {semantic_dims(num_classes)}"
            )
    return space


def to_param_space(space: Mapping[str, Dimension], searcher: str) -> dict[str, Any]:
    """Tune's ``param_space``: a flat dict keyed by the dotted keys.

    ``grid`` becomes ``tune.grid_search`` (``tune.choice`` for Optuna, which refuses grids);
    ``choice`` becomes ``tune.choice`` (``tune.grid_search`` for the grid searcher).
    """
    from ray import tune

    out: dict[str, Any] = {}
    for key, dim in space.items():
        kind = dim.kind
        if searcher == "optuna" and kind == "grid":
            kind = "choice"
        elif searcher == "grid" and kind == "choice":
            kind = "grid"
        if kind == "grid":
            out[key] = tune.grid_search(list(dim.values))
        elif kind == "choice":
            out[key] = tune.choice(list(dim.values))
        elif kind == "loguniform":
            out[key] = tune.loguniform(*dim.values)
        else:
            out[key] = tune.uniform(*dim.values)
    return out


def count_trials(space: Mapping[str, Dimension], searcher: str, num_samples: int) -> int:
    """How many trials the sweep runs: num_samples x the grid points (Optuna: num_samples)."""
    if searcher == "optuna":
        return num_samples
    points = 1
    for dim in space.values():
        if dim.kind == "grid" or (searcher == "grid" and dim.kind == "choice"):
            points *= len(dim.values)
    return points * num_samples


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 0.1}`` -> ``{"train": {"lr": 0.1}}``."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def trial_config(base: RunConfig, params: Mapping[str, Any]) -> RunConfig:
    """``base`` with a trial's values (dotted keys), the per-trial budget and R >= J + 1.

    Raises:
        ConfigError: the combination is invalid (listing every problem).
    """
    extra = dict(params)
    if base.tune.epochs is not None and "train.epochs" not in extra:
        extra["train.epochs"] = base.tune.epochs
    interval = int(extra.get("jump.interval", base.jump.interval))
    if "snapshots.keep" not in extra and base.snapshots.keep < interval + 1:
        extra["snapshots.keep"] = interval + 1
    return apply_overrides(base, nest(plain_values(extra)))


def plain_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """numpy scalars (Tune's samplers return them) as Python numbers, for pydantic, YAML, JSON."""
    out = {}
    for key, value in params.items():
        item = getattr(value, "item", None)
        out[key] = item() if callable(item) else value
    return out

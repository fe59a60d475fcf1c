"""Seeded synthetic label noise (docs/contract.md, 'Noise specs').

How it differs from the official code: docs/method.md, 'Synthetic noise'.

Spec strings: ``sym:0.4``, ``pairflip:0.45``, ``asym:0.4``, ``instance:0.4`` or ``none``.

- ``sym:p``: exactly round(p * N) samples (halves round up), chosen at random, get a *different*
  class drawn uniformly from the other C - 1, so the realized wrong-label rate is p. (The
  reference/DivideMix convention redraws from all C classes, true one included, and realizes
  p * (C - 1) / C.)
- ``pairflip:p``: each sample flips c -> (c + 1) mod C independently with probability p.
- ``asym:p``: each sample of a mapped class flips to its map target with probability p; the
  overall rate is p times the fraction of samples in mapped classes. Named maps are in
  :data:`ASYM_MAPS`.
- ``instance:p``: part-dependent noise (Xia et al., "Part-dependent Label Noise: Towards
  Instance-dependent Label Noise", NeurIPS 2020), the recipe the reference calls "ins".

Everything draws from the given ``numpy.random.Generator``: the same seed gives the same labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from jumpray.errors import ConfigError

__all__ = [
    "NoiseResult",
    "NOISE_TYPES",
    "ASYM_MAPS",
    "NOISE_SPEC_FORMS",
    "parse_noise_spec",
    "make_noisy_labels",
    "noise_transition_matrix",
]

NOISE_SPEC_FORMS = "none, sym:RATE, pairflip:RATE, asym:RATE, instance:RATE (RATE in [0, 1))"

# CIFAR-10 class-dependent flips of the official code: truck->automobile, bird->airplane,
# cat<->dog, deer->horse.
_CIFAR10_MAP = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
# Fashion-MNIST look-alike classes: T-shirt/top(0)<->Shirt(6), Pullover(2)<->Coat(4),
# Sandal(5)->Sneaker(7), Sneaker(7)->Ankle boot(9), Ankle boot(9)->Sneaker(7).
_FASHION_MNIST_MAP = {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 9, 9: 7}

ASYM_MAPS: dict[str, dict[int, int]] = {
    "cifar10": _CIFAR10_MAP,
    "fashion_mnist": _FASHION_MNIST_MAP,
}


@dataclass
class NoiseResult:
    """Noisy labels and how noisy they turned out.

    Attributes:
        given_label: (N,) int64, the labels a learner sees.
        realized_rate: fraction of samples with given != clean.
        transition: (C, C) float64 empirical matrix, row c = distribution of given labels among
            samples whose clean label is c (a class with no sample has a zero row).
        kind: the noise type name.
        rate: the requested rate.
    """

    given_label: np.ndarray
    realized_rate: float
    transition: np.ndarray
    kind: str
    rate: float


def parse_noise_spec(spec: str) -> tuple[str, float]:
    """Parse ``"kind:rate"`` (or ``"none"``).

    Args:
        spec: e.g. ``"sym:0.4"``; case and surrounding spaces are ignored.

    Returns:
        ``(kind, rate)``; ``"none"`` gives ``("none", 0.0)``.

    Raises:
        ConfigError: unknown kind, missing or unparsable rate, or rate outside [0, 1); the message
            lists the valid forms.
    """
    text = str(spec).strip().lower()
    if text in ("none", "none:0", "none:0.0", ""):
        return "none", 0.0
    kind, sep, rate_text = text.partition(":")
    problem = None
    rate = 0.0
    if not sep or kind not in NOISE_TYPES or kind == "none":
        problem = "unknown noise kind"
    else:
        try:
            rate = float(rate_text)
        except ValueError:
            problem = "the rate is not a number"
        else:
            if not 0.0 <= rate < 1.0:
                problem = "the rate must be in [0, 1)"
    if problem:
        raise ConfigError(f"noise spec {spec!r}: {problem} (valid forms: {NOISE_SPEC_FORMS})")
    return kind, rate


def noise_transition_matrix(
    clean_label: np.ndarray, given_label: np.ndarray, num_classes: int
) -> np.ndarray:
    """Empirical row-normalised noise transition matrix.

    Args:
        clean_label: (N,) int true labels.
        given_label: (N,) int observed labels.
        num_classes: C.

    Returns:
        (C, C) float64, ``T[c, g]`` = fraction of class-c samples labelled g; zero rows for
        classes without samples.
    """
    clean = np.asarray(clean_label, dtype=np.int64)
    given = np.asarray(given_label, dtype=np.int64)
    counts = np.bincount(clean * num_classes + given, minlength=num_classes * num_classes)
    counts = counts.reshape(num_classes, num_classes).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


# --- generators: (clean_label, num_classes, rate, rng, features, asym_map) -> given_label -------


def _no_noise(
    y: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator, **_
) -> np.ndarray:
    return y.copy()


def _symmetric(
    y: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator, **_
) -> np.ndarray:
    n = y.shape[0]
    num_flip = int(np.floor(rate * n + 0.5))
    out = y.copy()
    if num_flip == 0 or num_classes < 2:
        return out
    chosen = rng.choice(n, size=num_flip, replace=False)
    # An offset in 1..C-1 is uniform over the other classes and never returns the true one.
    offset = rng.integers(1, num_classes, size=num_flip)
    out[chosen] = (y[chosen] + offset) % num_classes
    return out


def _pairflip(
    y: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator, **_
) -> np.ndarray:
    flip = rng.random(y.shape[0]) < rate
    return np.where(flip, (y + 1) % num_classes, y)


def _resolve_asym_map(asym_map: str | Mapping[int, int] | None, num_classes: int) -> dict[int, int]:
    if asym_map is None:
        if num_classes == 10:
            raise ConfigError(
                "asym noise on 10 classes needs a class map: pass asym_map="
                f"{' or '.join(repr(k) for k in ASYM_MAPS)} or a dict {{from: to}}"
            )
        # The official code's CIFAR-100 'asym' is next-class pairflip.
        return {c: (c + 1) % num_classes for c in range(num_classes)}
    if isinstance(asym_map, str):
        if asym_map not in ASYM_MAPS:
            raise ConfigError(
                f"unknown asym map {asym_map!r}; valid maps: {', '.join(sorted(ASYM_MAPS))} "
                "or a dict {from: to}"
            )
        mapping = ASYM_MAPS[asym_map]
        if num_classes != 10:
            raise ConfigError(
                f"asym map {asym_map!r} is for 10 classes, the data has {num_classes}"
            )
        return dict(mapping)
    mapping = {int(k): int(v) for k, v in asym_map.items()}
    bad = [
        (k, v)
        for k, v in mapping.items()
        if not (0 <= k < num_classes and 0 <= v < num_classes) or k == v
    ]
    if bad:
        raise ConfigError(
            f"asym map entries {bad} are invalid: classes must be in [0, {num_classes}) and differ"
        )
    return mapping


def _asymmetric(
    y: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    *,
    asym_map: str | Mapping[int, int] | None = None,
    **_,
) -> np.ndarray:
    mapping = _resolve_asym_map(asym_map, num_classes)
    target = np.arange(num_classes)
    for src, dst in mapping.items():
        target[src] = dst
    # One uniform per sample, in index order; only mapped classes can flip.
    flip = (rng.random(y.shape[0]) < rate) & (target[y] != y)
    return np.where(flip, target[y], y)


def _truncated_normal(
    rng: np.random.Generator, mean: float, std: float, size: int, low: float, high: float
) -> np.ndarray:
    """Normal(mean, std) truncated to [low, high] by resampling the values that fall outside."""
    out = rng.normal(mean, std, size)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (out < low) | (out > high)
    return out


def _instance(
    y: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    *,
    features: np.ndarray | None = None,
    **_,
) -> np.ndarray:
    if features is None:
        raise ConfigError(
            "instance noise needs per-sample features (N, D), e.g. the flattened normalised images"
        )
    x = np.asarray(features, dtype=np.float32).reshape(y.shape[0], -1)
    n, d = x.shape
    # Per-sample flip rate q_i ~ N(rate, 0.1) truncated to [0, 1] by resampling (Xia et al. use
    # scipy's truncnorm, which is the same distribution).
    q = _truncated_normal(rng, rate, 0.1, n, 0.0, 1.0)
    w = rng.standard_normal((num_classes, d, num_classes), dtype=np.float32)
    u = rng.random(n)
    out = y.copy()
    for c in range(num_classes):
        rows = np.flatnonzero(y == c)
        if rows.size == 0:
            continue
        v = (x[rows] @ w[c]).astype(np.float64)  # (n_c, C) part-dependent scores
        v[:, c] = -np.inf
        v -= v.max(axis=1, keepdims=True)
        p = np.exp(v)
        p /= p.sum(axis=1, keepdims=True)
        p *= q[rows, None]
        p[:, c] += 1.0 - q[rows]
        cdf = np.cumsum(p, axis=1)
        # Inverse-CDF draw; the clip guards against cdf[-1] rounding to just below 1.
        out[rows] = np.minimum((cdf < u[rows, None]).sum(axis=1), num_classes - 1)
    return out


NoiseFn = Callable[..., np.ndarray]

NOISE_TYPES: dict[str, NoiseFn] = {
    "none": _no_noise,
    "sym": _symmetric,
    "pairflip": _pairflip,
    "asym": _asymmetric,
    "instance": _instance,
}


def make_noisy_labels(
    clean_label: np.ndarray,
    *,
    num_classes: int,
    kind: str,
    rate: float,
    rng: np.random.Generator,
    features: np.ndarray | None = None,
    asym_map: str | Mapping[int, int] | None = None,
) -> NoiseResult:
    """Corrupt clean labels with seeded synthetic noise.

    Args:
        clean_label: (N,) int64 true labels in [0, C).
        num_classes: C.
        kind: a name in :data:`NOISE_TYPES`.
        rate: the noise rate in [0, 1) (its meaning per kind: see the module docstring).
        rng: the only source of randomness.
        features: (N, D) or (N, ...) per-sample features, required by ``instance`` (flattened,
            normalised images).
        asym_map: ``asym`` only: a name in :data:`ASYM_MAPS` or a dict {from: to}. None with
            C == 10 is an error (which 10-class map?); None with another C flips every class to
            the next one, the reference's CIFAR-100 'asym'.

    Returns:
        A :class:`NoiseResult`.

    Raises:
        ConfigError: unknown kind, rate outside [0, 1), labels out of range, a bad map, or
            ``instance`` without features.
    """
    if kind not in NOISE_TYPES:
        raise ConfigError(f"unknown noise kind {kind!r}; valid kinds: {', '.join(NOISE_TYPES)}")
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"noise rate must be in [0, 1), got {rate}")
    y = np.asarray(clean_label)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"clean_label must be a 1-D integer array, got {y.dtype} {y.shape}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ConfigError(
            f"clean labels must be in [0, {num_classes}), got range [{y.min()}, {y.max()}]"
        )
    if features is not None and len(features) != y.shape[0]:
        raise ConfigError(f"features has {len(features)} rows, labels {y.shape[0]}")
    given = NOISE_TYPES[kind](
        y, num_classes, rate, rng, features=features, asym_map=asym_map
    ).astype(np.int64)
    realized = float((given != y).mean()) if y.size else 0.0
    return NoiseResult(
        given_label=given,
        realized_rate=realized,
        transition=noise_transition_matrix(y, given, num_classes),
        kind=kind,
        rate=float(rate),
    )

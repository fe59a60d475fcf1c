"""Seeded synthetic label noise: rates, transition structure, reproducibility (docs/contract.md)."""

from __future__ import annotations

import numpy as np
import pytest

from jumpray.core import (
    ASYM_MAPS,
    NOISE_TYPES,
    make_noisy_labels,
    noise_transition_matrix,
    parse_noise_spec,
)
from jumpray.errors import ConfigError

N, C = 20000, 10


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return np.random.default_rng(123).integers(0, C, size=N).astype(np.int64)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return np.random.default_rng(321).standard_normal((N, 16)).astype(np.float32)


def _noisy(clean, kind, rate, seed=0, **kw):
    return make_noisy_labels(
        clean, num_classes=C, kind=kind, rate=rate, rng=np.random.default_rng(seed), **kw
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("sym:0.4", ("sym", 0.4)),
        ("pairflip:0.45", ("pairflip", 0.45)),
        (" ASYM:0.4 ", ("asym", 0.4)),
        ("instance:0.2", ("instance", 0.2)),
        ("none", ("none", 0.0)),
        ("sym:0", ("sym", 0.0)),
    ],
)
def test_parse_noise_spec(spec, expected):
    assert parse_noise_spec(spec) == expected


@pytest.mark.parametrize("spec", ["sym", "sym:1.0", "sym:-0.1", "sym:abc", "gauss:0.2", "none:0.3"])
def test_parse_noise_spec_errors_list_forms(spec):
    with pytest.raises(ConfigError, match="valid forms: none, sym:RATE, pairflip:RATE"):
        parse_noise_spec(spec)


def test_transition_matrix_hand_example():
    t = noise_transition_matrix(np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 0, 1, 1, 0]), 3)
    assert t.tolist() == [[0.75, 0.25, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]


def test_sym_exact_rate_and_never_keeps_chosen_class(clean):
    res = _noisy(clean, "sym", 0.4)
    assert res.realized_rate == 0.4  # exactly round(0.4 * 20000) = 8000 flips
    assert int((res.given_label != clean).sum()) == 8000
    assert res.given_label.dtype == np.int64
    off = res.transition[~np.eye(C, dtype=bool)]
    # the 8000 wrong labels spread uniformly over the 9 other classes: 0.4 / 9 = 0.0444 each
    assert off.min() > 0.4 / 9 - 0.015 and off.max() < 0.4 / 9 + 0.015
    assert np.allclose(np.diag(res.transition), 0.6, atol=0.03)
    odd = _noisy(clean[:7], "sym", 0.3)
    assert odd.realized_rate == pytest.approx(2 / 7)  # round(2.1) = 2


def test_pairflip_rate_and_structure(clean):
    res = _noisy(clean, "pairflip", 0.45)
    assert res.realized_rate == pytest.approx(0.45, abs=0.02)
    allowed = np.eye(C, dtype=bool) | np.roll(np.eye(C, dtype=bool), 1, axis=1)
    assert (res.transition[~allowed] == 0).all()
    for c in range(C):
        assert res.transition[c, (c + 1) % C] == pytest.approx(0.45, abs=0.04)


@pytest.mark.parametrize(("name", "mapped_fraction"), [("cifar10", 0.5), ("fashion_mnist", 0.7)])
def test_asym_rate_and_only_map_entries(clean, name, mapped_fraction):
    res = _noisy(clean, "asym", 0.4, asym_map=name)
    assert res.realized_rate == pytest.approx(0.4 * mapped_fraction, abs=0.02)
    mapping = ASYM_MAPS[name]
    for src in range(C):
        for dst in range(C):
            if src == dst:
                continue
            if mapping.get(src) == dst:
                assert res.transition[src, dst] == pytest.approx(0.4, abs=0.04)
            else:
                assert res.transition[src, dst] == 0.0
    for unmapped in set(range(C)) - set(mapping):
        assert res.transition[unmapped, unmapped] == 1.0


def test_asym_named_maps():
    assert ASYM_MAPS["cifar10"] == {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    assert ASYM_MAPS["fashion_mnist"] == {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 9, 9: 7}


def test_asym_needs_map_for_ten_classes_and_takes_a_dict(clean):
    with pytest.raises(ConfigError, match="'cifar10' or 'fashion_mnist'"):
        _noisy(clean, "asym", 0.4)
    res = _noisy(clean, "asym", 0.3, asym_map={1: 8})
    assert set(np.flatnonzero(res.transition[~np.eye(C, dtype=bool)])) == {1 * 9 + 7}
    assert res.transition[1, 8] == pytest.approx(0.3, abs=0.04)
    with pytest.raises(ConfigError, match="invalid"):
        _noisy(clean, "asym", 0.3, asym_map={1: 1})
    with pytest.raises(ConfigError, match="valid maps"):
        _noisy(clean, "asym", 0.3, asym_map="imagenet")


def test_asym_without_map_on_other_class_count_is_next_class():
    y = np.random.default_rng(0).integers(0, 5, size=5000)
    res = make_noisy_labels(y, num_classes=5, kind="asym", rate=0.4, rng=np.random.default_rng(1))
    allowed = np.eye(5, dtype=bool) | np.roll(np.eye(5, dtype=bool), 1, axis=1)
    assert (res.transition[~allowed] == 0).all()
    assert res.realized_rate == pytest.approx(0.4, abs=0.03)


def test_instance_rate_and_needs_features(clean, features):
    with pytest.raises(ConfigError, match="features"):
        _noisy(clean, "instance", 0.4)
    res = _noisy(clean, "instance", 0.4, features=features)
    assert res.realized_rate == pytest.approx(0.4, abs=0.02)
    assert np.allclose(np.diag(res.transition), 0.6, atol=0.05)
    # Instance-dependent: where a sample flips to depends on its features. Two copies of the same
    # (features, label), both flipped, land on the same wrong class far above the 1/9 of chance.
    half = N // 2
    twin_y = np.concatenate([clean[:half], clean[:half]])
    twin_x = np.concatenate([features[:half], features[:half]])
    g = make_noisy_labels(
        twin_y,
        num_classes=C,
        kind="instance",
        rate=0.4,
        rng=np.random.default_rng(0),
        features=twin_x,
    ).given_label
    a, b, y = g[:half], g[half:], clean[:half]
    both = (a != y) & (b != y)
    assert both.sum() > 1000
    assert (a[both] == b[both]).mean() > 0.4
    # Features of any trailing shape are flattened.
    img = features.reshape(N, 4, 4)
    assert np.array_equal(_noisy(clean, "instance", 0.4, features=img).given_label, res.given_label)


@pytest.mark.parametrize("kind", ["sym", "pairflip", "asym", "instance"])
def test_same_seed_same_labels_other_seed_different(clean, features, kind):
    kw = {"features": features, "asym_map": "cifar10"}
    a = _noisy(clean, kind, 0.3, seed=5, **kw).given_label
    b = _noisy(clean, kind, 0.3, seed=5, **kw).given_label
    c = _noisy(clean, kind, 0.3, seed=6, **kw).given_label
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_none_and_bad_inputs(clean):
    res = _noisy(clean, "none", 0.0)
    assert res.realized_rate == 0.0 and np.array_equal(res.given_label, clean)
    assert np.array_equal(res.transition, np.eye(C))
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        _noisy(clean, "sym", 1.0)
    with pytest.raises(ConfigError, match="valid kinds"):
        _noisy(clean, "gauss", 0.1)
    with pytest.raises(ConfigError, match="clean labels must be in"):
        _noisy(np.array([0, 10]), "sym", 0.1)
    assert set(NOISE_TYPES) == {"none", "sym", "pairflip", "asym", "instance"}

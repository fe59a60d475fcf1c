"""Hadamard codebook: structure, Hamming distances, the K error message (docs/method.md)."""

from __future__ import annotations

import itertools

import pytest
import torch

from jumpray.core import decode_codes, hadamard, make_codebook, min_num_bits
from jumpray.errors import ConfigError


def _hamming(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a != b).sum())


def test_hadamard_small_orders_by_hand():
    assert hadamard(1).tolist() == [[1.0]]
    assert hadamard(2).tolist() == [[1.0, 1.0], [1.0, -1.0]]
    assert hadamard(4).tolist() == [
        [1.0, 1.0, 1.0, 1.0],
        [1.0, -1.0, 1.0, -1.0],
        [1.0, 1.0, -1.0, -1.0],
        [1.0, -1.0, -1.0, 1.0],
    ]
    h = hadamard(32)
    assert h.dtype == torch.float32
    assert torch.equal(h @ h.T, 32 * torch.eye(32))


@pytest.mark.parametrize("k", [0, 3, 6, 12])
def test_hadamard_rejects_non_power_of_two(k):
    with pytest.raises(ValueError, match="power of two"):
        hadamard(k)


@pytest.mark.parametrize(
    ("num_classes", "num_bits"), [(4, 4), (10, 16), (10, 32), (3, 2), (12, 8), (14, 8), (100, 64)]
)
def test_codes_are_pm1_and_differ_in_half_the_bits(num_classes, num_bits):
    cb = make_codebook(num_classes, num_bits)
    assert cb.shape == (num_classes, num_bits)
    assert cb.dtype == torch.float32
    assert set(cb.unique().tolist()) <= {-1.0, 1.0}
    for a, b in itertools.combinations(range(num_classes), 2):
        antipodal = num_classes > num_bits and abs(a - b) == num_bits
        expected = num_bits if antipodal else num_bits // 2
        assert _hamming(cb[a], cb[b]) == expected, (a, b)


def test_rows_of_h_then_minus_h():
    h = hadamard(8)
    cb = make_codebook(12, 8)
    assert torch.equal(cb[:8], h)
    assert torch.equal(cb[8:], -h[:4])
    assert torch.equal(make_codebook(5, 8), h[:5])


def test_too_many_classes_names_valid_k():
    with pytest.raises(ConfigError) as err:
        make_codebook(100, 8)
    msg = str(err.value)
    assert "model.semantic_dim=8 cannot encode 100 classes" in msg
    assert "C <= 2K" in msg
    assert "model.semantic_dim=64 or 128" in msg
    # The official code's CIFAR-100 + K=32 inconsistency (docs/method.md, 'Semantic codes').
    with pytest.raises(ConfigError, match="semantic_dim=64 or 128"):
        make_codebook(100, 32)


def test_non_power_of_two_bits_is_config_error():
    with pytest.raises(
        ConfigError, match="semantic_dim=12 is not a power of two.*semantic_dim=8 or 16"
    ):
        make_codebook(10, 12)


@pytest.mark.parametrize(
    ("num_classes", "expected"),
    [(1, 2), (2, 2), (4, 2), (5, 4), (10, 8), (16, 8), (17, 16), (100, 64)],
)
def test_min_num_bits(num_classes, expected):
    assert min_num_bits(num_classes) == expected
    make_codebook(num_classes, expected)  # must be accepted
    if expected > 2:
        with pytest.raises(ConfigError):
            make_codebook(num_classes, expected // 2)


def test_decode_codes_nearest_codeword():
    cb = make_codebook(4, 4)
    codes = torch.stack([0.3 * cb[2], 0.9 * cb[1], torch.tensor([0.5, -0.2, 0.9, -0.1])])
    # Row 2 has signs (+, -, +, -) = code 1.
    assert decode_codes(codes, cb).tolist() == [2, 1, 1]

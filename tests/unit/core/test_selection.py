"""Clean rules on the table of docs/method.md, 'Clean rule', bit-loss statistics, the view blend."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jumpray.core import (
    SELECTION_RULES,
    bit_loss_stats,
    bit_losses,
    blend_views,
    class_floor_fill,
    clean_rule,
    draw_blend_lambda,
    make_codebook,
)

K, C, Y, OTHER = 32, 10, 3, 4


def test_bit_loss_stats_hand_values():
    mean, var = bit_loss_stats(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]))
    assert mean.tolist() == pytest.approx([2.5, 5.0])
    assert var.tolist() == pytest.approx([5 / 3, 0.0])  # unbiased: 5 / (4 - 1)


def _table_batch():
    """The outputs of that table for a sample labelled Y, one per row (0.999 = a trained tanh head)."""
    cb = make_codebook(C, K)
    code = cb[Y]
    h = torch.stack([0.999 * code, 0.5 * code, torch.zeros(K), -0.999 * code, 0.999 * cb[OTHER]])
    y = torch.full((5,), Y)
    return h, y, cb


def test_reference_table_numbers():
    h, y, cb = _table_batch()
    mean, var = bit_loss_stats(bit_losses(h, cb[y], clamp=1e-4))
    # h ~ c_y; 0.5 c_y (log 4/3); zeros (ln 2); antipodal (-log 5e-4); another row.
    assert mean.tolist() == pytest.approx(
        [0.0005, math.log(4 / 3), math.log(2), -math.log(0.0005), 3.8007], abs=2e-4
    )
    assert var[:4].abs().max().item() < 1e-8
    # Half the bits at -log(0.9995), half at -log(0.0005): unbiased var = 32/31 * (diff/2)^2.
    diff = -math.log(0.0005) + math.log(0.9995)
    assert var[4].item() == pytest.approx(32 / 31 * (diff / 2) ** 2, rel=1e-4)
    assert var[4].item() == pytest.approx(14.9, abs=0.05)


def _logits_predicting(label: int, n: int) -> torch.Tensor:
    logits = torch.zeros(n, C)
    logits[:, label] = 5.0
    return logits


def test_rules_on_the_table_when_classifier_disagrees():
    h, y, cb = _table_batch()
    bits = bit_losses(h, cb[y])
    logits = _logits_predicting(OTHER, 5)  # classifier never agrees with Y
    ref = clean_rule(logits, y, bits, rule="reference", tau=1e-3)
    guarded = clean_rule(logits, y, bits, rule="guarded", tau=1e-3, max_mean_bit_loss=0.5)
    #                         true   0.5c   zeros  anti   other
    assert ref.tolist() == [True, True, True, True, False]
    assert guarded.tolist() == [True, True, False, False, False]


def test_classifier_agreement_overrides_both_rules():
    h, y, cb = _table_batch()
    bits = bit_losses(h, cb[y])
    logits = _logits_predicting(Y, 5)
    for rule in ("reference", "guarded"):
        assert clean_rule(logits, y, bits, rule=rule, tau=1e-3).tolist() == [True] * 5


def test_argmax_uses_given_label_per_row_and_no_grad():
    logits = torch.tensor([[0.0, 1.0], [3.0, 1.0]], requires_grad=True)
    y = torch.tensor([1, 1])
    bits = torch.tensor([[0.0, 5.0], [0.0, 5.0]], requires_grad=True)  # var 12.5: never clean
    out = clean_rule(logits, y, bits, rule="reference", tau=1e-3)
    assert out.tolist() == [True, False]
    assert not out.requires_grad


def test_unknown_rule_lists_names():
    assert set(SELECTION_RULES) == {"reference", "guarded"}
    with pytest.raises(ValueError, match="guarded, reference"):
        clean_rule(torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 4), rule="strict", tau=1e-3)


def test_blend_lambda_reproducible_and_in_range():
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    a = [draw_blend_lambda(g1, 5.0) for _ in range(20)]
    b = [draw_blend_lambda(g2, 5.0) for _ in range(20)]
    assert a == b
    assert len(set(a)) == 20  # the generator advances
    assert all(0.5 <= lam <= 1.0 for lam in a)
    g3 = torch.Generator().manual_seed(8)
    assert [draw_blend_lambda(g3, 5.0) for _ in range(20)] != a


def test_blend_lambda_matches_folded_beta_mean():
    g = torch.Generator().manual_seed(0)
    draws = np.array([draw_blend_lambda(g, 5.0) for _ in range(4000)])
    # E[max(X, 1-X)], X ~ Beta(5, 5) with density 630 x^4 (1-x)^4: 2 * int_0.5^1 x f(x) dx.
    x = np.linspace(0.5, 1.0, 200001)
    f = 630 * x**4 * (1 - x) ** 4
    expected = 2 * float(np.sum(x * f) * (x[1] - x[0]))
    assert expected == pytest.approx(0.6230, abs=1e-3)
    assert draws.mean() == pytest.approx(expected, abs=0.01)


def test_blend_views_hand_value():
    weak = torch.tensor([[1.0, 2.0]])
    strong = torch.tensor([[3.0, -2.0]])
    assert blend_views(weak, strong, 0.75).tolist() == [[1.5, 1.0]]
    assert torch.equal(blend_views(weak, strong, 1.0), weak)
    with pytest.raises(ValueError, match="must match"):
        blend_views(weak, torch.zeros(2, 2), 0.5)


def test_class_floor_fills_a_starved_class_with_its_most_likely_samples():
    # Class 0: 4 of 4 flagged. Class 1: 0 of 4 flagged. Overall 4/8 = 0.5.
    flags = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    given = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    score = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.1, 0.8, 0.3, 0.7])
    out = class_floor_fill(flags, given, score, num_classes=2, floor=1.0)
    # Class 1 needs int(1.0 * 0.5 * 4) = 2: its two highest p(given), rows 5 (0.8) and 7 (0.7).
    assert out.tolist() == [True, True, True, True, False, True, False, True]
    # Never removes a flag; the input is not modified.
    assert bool((out | flags).eq(out).all()) and int(flags.sum()) == 4


def test_class_floor_zero_is_the_reference_and_a_met_floor_adds_nothing():
    flags = torch.tensor([1, 0, 1, 0], dtype=torch.bool)
    given = torch.tensor([0, 0, 1, 1])
    score = torch.tensor([0.5, 0.9, 0.5, 0.9])
    assert torch.equal(class_floor_fill(flags, given, score, num_classes=2, floor=0.0), flags)
    # Both classes already hold 1 of 2 = the overall 0.5.
    assert torch.equal(class_floor_fill(flags, given, score, num_classes=2, floor=1.0), flags)
    # floor 2 asks each class for int(2 * 0.5 * 2) = 2 of 2.
    assert bool(class_floor_fill(flags, given, score, num_classes=2, floor=2.0).all())


def test_class_floor_ignores_absent_classes_and_rejects_bad_input():
    flags = torch.tensor([0, 0], dtype=torch.bool)
    given = torch.tensor([2, 2])
    score = torch.tensor([0.1, 0.2])
    # Nothing flagged at all: the overall fraction is 0, so no class is below it.
    assert not bool(class_floor_fill(flags, given, score, num_classes=5, floor=1.0).any())
    with pytest.raises(ValueError, match="floor must be >= 0"):
        class_floor_fill(flags, given, score, num_classes=5, floor=-1.0)
    with pytest.raises(ValueError, match=r"all be \(M,\)"):
        class_floor_fill(flags, given[:1], score, num_classes=5, floor=1.0)

"""Co-teaching and JoCoR maths on hand examples."""

from __future__ import annotations

import math

import pytest
import torch

from jumpray.core import (
    coteaching_masks,
    forget_rate_schedule,
    jocor_loss,
    jocor_per_sample_loss,
    small_loss_mask,
)


def test_forget_rate_schedule_values():
    kw = {"forget_rate": 0.4, "num_gradual": 10, "exponent": 1.0}
    assert [forget_rate_schedule(e, **kw) for e in (0, 1, 5, 10, 25)] == pytest.approx(
        [0.0, 0.04, 0.2, 0.4, 0.4]
    )
    # c = 2: tau * min(T^2 / Tk, 1) -> 0.4 * 4/10 at T=2, capped from T=4 (16/10 > 1)
    sq = {"forget_rate": 0.4, "num_gradual": 10, "exponent": 2.0}
    assert forget_rate_schedule(2, **sq) == pytest.approx(0.16)
    assert forget_rate_schedule(4, **sq) == pytest.approx(0.4)
    assert forget_rate_schedule(0, forget_rate=0.3, num_gradual=0, exponent=1.0) == 0.3


def test_small_loss_mask_picks_smallest_with_ceil():
    loss = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7])
    # keep ceil(0.6 * 5) = 3 -> indices 1, 3, 2
    assert small_loss_mask(loss, 0.4).tolist() == [False, True, True, True, False]
    # ceil(0.75 * 5) = ceil(3.75) = 4
    assert small_loss_mask(loss, 0.25).tolist() == [False, True, True, True, True]
    # 0.7 * 10 must keep exactly 7 despite float rounding
    assert int(small_loss_mask(torch.arange(10.0), 0.3).sum()) == 7
    assert small_loss_mask(loss, 0.0).all()
    assert small_loss_mask(torch.tensor([2.0, 1.0]), 0.99).tolist() == [False, True]  # at least 1
    assert small_loss_mask(torch.tensor([1.0, 1.0, 1.0]), 0.5).tolist() == [
        True,
        True,
        False,
    ]  # ties


def test_coteaching_cross_masks():
    loss_1 = torch.tensor([0.1, 0.2, 0.9, 0.8])
    loss_2 = torch.tensor([0.9, 0.8, 0.1, 0.2])
    for_1, for_2 = coteaching_masks(loss_1, loss_2, 0.5)
    assert for_1.tolist() == [False, False, True, True]  # network 2's small-loss samples
    assert for_2.tolist() == [True, True, False, False]  # network 1's


def _hand_jocor(l1, l2, y, lam):
    def softmax(z):
        e = [math.exp(v) for v in z]
        s = sum(e)
        return [v / s for v in e]

    out = []
    for z1, z2, t in zip(l1, l2, y, strict=True):
        p1, p2 = softmax(z1), softmax(z2)
        ce = -math.log(p1[t]) - math.log(p2[t])
        kl12 = sum(a * math.log(a / b) for a, b in zip(p1, p2, strict=True))
        kl21 = sum(b * math.log(b / a) for a, b in zip(p1, p2, strict=True))
        out.append((1 - lam) * ce + lam * (kl12 + kl21))
    return out


def test_jocor_per_sample_loss_hand_computation():
    l1 = [[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]]
    l2 = [[0.0, 1.0, 0.0], [0.5, 0.5, 0.5]]
    y = [0, 2]
    expected = _hand_jocor(l1, l2, y, 0.7)
    got = jocor_per_sample_loss(torch.tensor(l1), torch.tensor(l2), torch.tensor(y), 0.7)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    # first row by hand: p1 = (e, 1, 1)/(e+2), p2 = (1, e, 1)/(e+2); CE = 2 log(e+2) - 1;
    # KL(p1||p2) = KL(p2||p1) = (e - 1) / (e + 2)
    e = math.e
    row0 = 0.3 * (2 * math.log(e + 2) - 1) + 0.7 * 2 * (e - 1) / (e + 2)
    assert got[0].item() == pytest.approx(row0, rel=1e-5)


def test_jocor_loss_means_over_small_loss_samples():
    l1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]], requires_grad=True)
    l2 = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.5]], requires_grad=True)
    y = torch.tensor([0, 2])
    per = _hand_jocor(l1.tolist(), l2.tolist(), y.tolist(), 0.7)
    loss, mask = jocor_loss(l1, l2, y, co_lambda=0.7, forget_rate=0.5)  # keep ceil(1) = 1
    assert mask.tolist() == [per[0] < per[1], per[1] <= per[0]]
    assert loss.item() == pytest.approx(min(per), rel=1e-5)
    loss.backward()
    assert l1.grad[int(mask.int().argmin())].abs().sum() == 0  # the dropped sample gets no gradient
    loss_all, mask_all = jocor_loss(l1, l2, y, co_lambda=0.7, forget_rate=0.0)
    assert mask_all.all() and loss_all.item() == pytest.approx(sum(per) / 2, rel=1e-5)

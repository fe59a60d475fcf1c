"""Bit losses, scaled CE, warm-up and selection-phase losses (docs/method.md, 'Training losses')."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jumpray.core import (
    bit_losses,
    jump_loss,
    make_codebook,
    scaled_cross_entropy,
    semantic_loss,
    warmup_loss,
)

LN2 = math.log(2.0)


def test_bit_losses_hand_values():
    h = torch.tensor([[0.5, -0.5, 0.0, 0.9]])
    c = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    expected = [-math.log(0.75), -math.log(0.25), LN2, -math.log(0.05)]
    got = bit_losses(h, c)
    assert got.shape == (1, 4)
    assert got[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_bit_losses_equal_bce_of_shifted_values():
    torch.manual_seed(1)
    h = torch.rand(6, 8) * 1.8 - 0.9
    c = make_codebook(6, 8)
    bce = F.binary_cross_entropy((h + 1) / 2, (c + 1) / 2, reduction="none")
    assert torch.allclose(bit_losses(h, c), bce, atol=1e-5)


def test_bit_losses_gradient():
    h = torch.tensor([[0.5, -0.5]], requires_grad=True)
    c = torch.tensor([[1.0, 1.0]])
    bit_losses(h, c).sum().backward()
    # d/dh -log((1 + c h)/2) = -c / (1 + c h)
    assert h.grad[0].tolist() == pytest.approx([-1 / 1.5, -1 / 0.5], rel=1e-5)


def test_clamp_keeps_loss_finite_at_pm1():
    h = torch.tensor([[1.0, -1.0, 1.0, -1.0]], requires_grad=True)
    c = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    got = bit_losses(h, c, clamp=1e-4)
    assert torch.isfinite(got).all()
    # agree: -log(1 - 5e-5) ~ 5e-5; disagree: -log(5e-5) = 9.9035
    assert got[0].tolist() == pytest.approx([5.0001e-5, 5.0001e-5, 9.90349, 9.90349], rel=1e-3)
    got.sum().backward()
    assert h.grad.abs().max() == 0.0  # outside the clamp range the gradient is cut
    assert bit_losses(h.detach(), c, clamp=0.01)[0, 2].item() == pytest.approx(
        -math.log(0.005), rel=1e-5
    )


def test_bit_losses_shape_mismatch():
    with pytest.raises(ValueError, match="must match"):
        bit_losses(torch.zeros(2, 4), torch.ones(2, 8))


def test_semantic_loss_mask_and_empty_mask_keeps_graph():
    bl = torch.tensor([[1.0, 3.0], [2.0, 2.0], [10.0, 20.0]], requires_grad=True)
    assert semantic_loss(bl).item() == pytest.approx(38 / 6)
    assert semantic_loss(bl, torch.tensor([True, True, False])).item() == pytest.approx(2.0)
    empty = semantic_loss(bl, torch.tensor([False, False, False]))
    assert empty.item() == 0.0
    assert empty.requires_grad
    empty.backward()
    assert torch.equal(bl.grad, torch.zeros_like(bl))


def test_scaled_cross_entropy_hand_value():
    logits = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    y = torch.tensor([0, 0])
    # logits / 2 = [1, 0] -> log(1 + e^-1); [0, 2] -> log(1 + e^2)
    per = scaled_cross_entropy(logits, y, temperature=2.0, reduction="none")
    assert per.tolist() == pytest.approx(
        [math.log(1 + math.exp(-1)), math.log(1 + math.exp(2))], rel=1e-6
    )
    mean = scaled_cross_entropy(logits, y, temperature=2.0)
    assert mean.item() == pytest.approx(per.mean().item())
    with pytest.raises(ValueError, match="reduction"):
        scaled_cross_entropy(logits, y, temperature=2.0, reduction="sum")


def _uniform_batch(b: int = 4, c: int = 4, k: int = 8):
    logits = torch.zeros(b, c, requires_grad=True)
    codes = torch.zeros(b, k, requires_grad=True)
    y = torch.arange(b) % c
    return logits, codes, y, make_codebook(c, k)


def test_jump_loss_hand_value_is_sum_over_selected_over_b():
    logits, codes, y, cb = _uniform_batch()
    sel = torch.tensor([True, False, True, False])
    loss = jump_loss(logits, codes, y, cb, sel, temperature=2.0, clamp=1e-4)
    # each sample: CE = log 4 (uniform logits), bit loss = ln 2 (zero codes) -> 3 ln 2; 2 of 4 kept
    assert loss.item() == pytest.approx(3 * LN2 * 2 / 4, rel=1e-6)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_jump_loss_matches_reference_formula_on_random_batch():
    torch.manual_seed(3)
    logits = torch.randn(6, 5)
    codes = torch.tanh(torch.randn(6, 8))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    cb = make_codebook(5, 8)
    sel = torch.tensor([True, False, True, True, False, False])
    ce = F.cross_entropy(logits[sel] / 2.0, y[sel])
    bce = F.binary_cross_entropy(
        (codes[sel].clamp(-1 + 1e-4, 1 - 1e-4) + 1) / 2, (cb[y[sel]] + 1) / 2
    )
    expected = (ce + bce) * 3 / 6
    got = jump_loss(logits, codes, y, cb, sel, temperature=2.0, clamp=1e-4)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    bits = bit_losses(codes, cb[y])
    reuse = jump_loss(logits, codes, y, cb, sel, temperature=2.0, bit_loss=bits)
    assert reuse.item() == pytest.approx(got.item(), rel=1e-6)


def test_jump_loss_with_nothing_selected_is_zero_with_graph():
    logits, codes, y, cb = _uniform_batch()
    loss = jump_loss(logits, codes, y, cb, torch.zeros(4, dtype=torch.bool), temperature=2.0)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()  # every DDP rank can still call backward
    assert logits.grad.abs().sum() == 0 and codes.grad.abs().sum() == 0


def test_warmup_loss_hand_value():
    logits, codes, y, cb = _uniform_batch()
    loss = warmup_loss(logits, bit_losses(codes, cb[y]), y, temperature=2.0)
    assert loss.item() == pytest.approx(math.log(4) + LN2, rel=1e-6)

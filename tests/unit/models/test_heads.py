"""Classifier and semantic heads: layer layout, hand-computed outputs, dropout behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jumpray.models import ClassifierHead, SemanticHead, count_parameters


def test_classifier_head_is_one_linear():
    head = ClassifierHead(5, 3)
    assert count_parameters(head) == 5 * 3 + 3
    assert head(torch.randn(4, 5)).shape == (4, 3)


def test_semantic_head_layout_follows_reference():
    head = SemanticHead(4, 8)  # hidden defaults to d
    kinds = [type(m) for m in head.mlp]
    assert kinds == [
        nn.Linear,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
        nn.Tanh,
    ]
    assert [head.mlp[i].p for i in (2, 5)] == [0.5, 0.5]
    assert count_parameters(head) == (4 * 4 + 4) + (4 * 4 + 4) + (4 * 8 + 8)  # 80
    assert count_parameters(SemanticHead(4, 8, hidden=6)) == (4 * 6 + 6) + (6 * 6 + 6) + (6 * 8 + 8)


def test_semantic_head_hand_computed_output():
    head = SemanticHead(2, 1, hidden=2, dropout=0.0)
    with torch.no_grad():
        for layer in (head.mlp[0], head.mlp[3]):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
        head.mlp[6].weight.copy_(torch.tensor([[1.0, 1.0]]))
        head.mlp[6].bias.zero_()
        out = head(torch.tensor([[0.5, -1.0], [2.0, 1.0]]))
    # tanh(relu(x1) + relu(x2)): tanh(0.5) and tanh(3).
    torch.testing.assert_close(out, torch.tensor([[math.tanh(0.5)], [math.tanh(3.0)]]))


def test_codes_lie_in_open_interval():
    codes = SemanticHead(16, 32)(torch.randn(64, 16))
    assert codes.shape == (64, 32)
    assert codes.abs().max() < 1.0


def test_dropout_active_only_in_train_mode():
    head = SemanticHead(32, 8, dropout=0.5)
    x = torch.randn(4, 32)
    head.train()
    assert not torch.equal(head(x), head(x))
    head.eval()
    assert torch.equal(head(x), head(x))


def test_bad_head_arguments():
    with pytest.raises(ValueError, match="dropout must be in"):
        SemanticHead(4, 8, dropout=1.0)
    with pytest.raises(ValueError, match="num_bits=0"):
        SemanticHead(4, 0)
    with pytest.raises(ValueError, match="num_classes=0"):
        ClassifierHead(4, 0)

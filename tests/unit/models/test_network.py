"""TwoHeadNet and build_model: shapes, the optional semantic head, gradients, seeded init."""

from __future__ import annotations

import pytest
import torch

from jumpray.models import TwoHeadNet, build_model, count_parameters

CNN28_GREY = 139_168  # see test_backbones.test_parameter_counts


def _cnn(num_bits: int = 32, in_channels: int = 1) -> TwoHeadNet:
    return build_model(backbone="cnn28", num_classes=10, num_bits=num_bits, in_channels=in_channels)


@pytest.mark.parametrize(("in_channels", "side"), [(1, 28), (3, 32)])
def test_shapes_and_attributes(in_channels, side):
    model = _cnn(in_channels=in_channels)
    assert (model.num_classes, model.num_bits, model.feature_dim) == (10, 32, 128)
    logits, codes = model(torch.randn(5, in_channels, side, side))
    assert logits.shape == (5, 10) and codes.shape == (5, 32)
    assert logits.dtype == codes.dtype == torch.float32
    assert codes.abs().max() < 1.0


def test_preact_resnet18_model_on_32x32():
    model = build_model(backbone="preact_resnet18", num_classes=100, num_bits=64, in_channels=3)
    logits, codes = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and codes.shape == (2, 64)
    assert model.feature_dim == 512


def test_parameter_count_with_and_without_semantic_head():
    classifier = 128 * 10 + 10
    semantic = (128 * 128 + 128) * 2 + (128 * 32 + 32)  # hidden = D = 128, K = 32
    assert count_parameters(_cnn(num_bits=32)) == CNN28_GREY + classifier + semantic  # 177,610
    assert count_parameters(_cnn(num_bits=0)) == CNN28_GREY + classifier  # 140,458
    small = build_model(
        backbone="cnn28", num_classes=10, num_bits=16, in_channels=1, semantic_hidden=8
    )
    assert count_parameters(small) == CNN28_GREY + classifier + (128 * 8 + 8) + (8 * 8 + 8) + (
        8 * 16 + 16
    )


def test_num_bits_zero_gives_no_codes():
    model = _cnn(num_bits=0)
    assert model.semantic is None and model.num_bits == 0
    logits, codes = model(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10) and codes is None


def test_forward_is_heads_of_features():
    model = _cnn().eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (3, 128)
        logits, codes = model(x)
        logits2, codes2 = model.forward_heads(features)
    assert torch.equal(logits, logits2) and torch.equal(codes, codes2)


def test_both_heads_train_the_backbone():
    model = _cnn()
    x = torch.randn(4, 1, 28, 28)
    stem = model.backbone[0].weight
    # No stop-gradient: the semantic loss alone reaches the stem, and so does the CE alone.
    _, codes = model(x)
    codes.sum().backward()
    assert stem.grad.abs().sum() > 0 and model.classifier.fc.weight.grad is None
    model.zero_grad(set_to_none=True)
    logits, _ = model(x)
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    assert stem.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.semantic.parameters())


def test_full_backward_reaches_every_parameter():
    model = _cnn()
    logits, codes = model(torch.randn(8, 1, 28, 28))
    (torch.nn.functional.cross_entropy(logits, torch.arange(8)) + codes.square().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_same_seed_same_model_different_seed_different():
    x = torch.randn(4, 1, 28, 28)

    def outputs(seed: int):
        torch.manual_seed(seed)
        model = _cnn().eval()
        with torch.no_grad():
            return model(x)

    (a_logits, a_codes), (b_logits, b_codes) = outputs(7), outputs(7)
    assert torch.equal(a_logits, b_logits) and torch.equal(a_codes, b_codes)
    c_logits, _ = outputs(8)
    assert not torch.equal(a_logits, c_logits)


def test_trainable_only_count():
    model = _cnn(num_bits=0)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 128 * 10 + 10
    assert count_parameters(model) == CNN28_GREY + 128 * 10 + 10


def test_bad_arguments_raise():
    with pytest.raises(
        ValueError, match="unknown backbone 'nope'.*cnn28.*preact_resnet18.*resnet50"
    ):
        build_model(backbone="nope", num_classes=10, num_bits=32, in_channels=1)
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        build_model(backbone="cnn28", num_classes=1, num_bits=32, in_channels=1)
    with pytest.raises(ValueError, match="num_bits must be >= 0"):
        build_model(backbone="cnn28", num_classes=10, num_bits=-1, in_channels=1)

"""Backbone registry: shapes, exact parameter counts, errors, pretrained loading without network."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from torch import nn

from jumpray.models import (
    BACKBONES,
    PretrainedWeightsError,
    build_backbone,
    count_parameters,
    list_backbones,
    register_backbone,
)
from jumpray.models.backbones import _adapt_stem_weight, _PreActBlock

# (name, in_channels, input side, D). resnet50 runs on 64x64 to stay quick.
CASES = [
    ("cnn28", 1, 28, 128),
    ("cnn28", 3, 32, 128),
    ("small_cnn", 1, 28, 128),
    ("small_cnn", 3, 32, 128),
    ("tiny_cnn", 1, 28, 128),
    ("preact_resnet18", 3, 32, 512),
    ("preact_resnet18", 1, 32, 512),
    ("resnet50", 3, 64, 2048),
    ("resnet50", 1, 64, 2048),
]


def test_registry_lists_the_three_backbones_sorted():
    names = list_backbones()
    assert {"cnn28", "preact_resnet18", "resnet50"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize(("name", "in_channels", "side", "dim"), CASES)
def test_feature_shape_and_backward(name, in_channels, side, dim):
    net, d = build_backbone(name, in_channels=in_channels)
    assert d == dim
    x = torch.randn(2, in_channels, side, side)
    features = net(x)
    assert features.shape == (2, dim)
    assert features.dtype == torch.float32
    features.square().mean().backward()
    first = next(p for p in net.parameters() if p.dim() == 4)  # the stem conv
    assert first.shape[1] == in_channels
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # 3x3 convs without bias 1*32, 32*32, 32*64, 64*64, 64*128 (x9) = 138,528; BN 2*(32+32+64+64+128) = 640.
        ("cnn28", 139_168),
        # convs 1*32*9 + 32*64*9 = 18,720; BN 2*(32+64) = 192; fc 64*49*128 + 128 = 401,536.
        ("small_cnn", 420_448),
        # convs 1*16*9 + 16*32*9 = 4,752; BN 2*(16+32) = 96; fc 32*49*128 + 128 = 200,832.
        ("tiny_cnn", 205_680),
        # Kuang Liu's 10-class PreActResNet18 has 11,171,146 with a 5,130-parameter fc;
        # minus the fc, plus the final BN(512) of He et al. = 11,167,040 (stage sums by hand:
        # stem 1,728 + 147,968 + 525,184 + 2,098,944 + 8,392,192 + 1,024).
        ("preact_resnet18", 11_167_040),
        # torchvision resnet50 has 25,557,032; its fc is 2048*1000 + 1000 = 2,049,000.
        ("resnet50", 23_508_032),
    ],
)
def test_parameter_counts(name, expected):
    in_channels = 1 if name in ("cnn28", "small_cnn", "tiny_cnn") else 3
    net, _ = build_backbone(name, in_channels=in_channels)
    assert count_parameters(net) == expected


def test_cnn28_grey_to_rgb_adds_only_stem_weights():
    grey, _ = build_backbone("cnn28", in_channels=1)
    rgb, _ = build_backbone("cnn28", in_channels=3)
    assert count_parameters(rgb) - count_parameters(grey) == 2 * 32 * 9


def test_cnn28_weights_are_channels_last():
    net, _ = build_backbone("cnn28", in_channels=1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'") as info:
        build_backbone("vgg", in_channels=3)
    for name in ("cnn28", "preact_resnet18", "resnet50"):
        assert name in str(info.value)


def test_bad_in_channels_and_pretrained_without_weights():
    with pytest.raises(ValueError, match="in_channels must be >= 1, got 0"):
        build_backbone("cnn28", in_channels=0)
    with pytest.raises(ValueError, match="'preact_resnet18' has no pretrained weights"):
        build_backbone("preact_resnet18", in_channels=3, pretrained=True)


def test_register_backbone_adds_and_refuses_duplicates():
    @register_backbone("_test_tiny")
    def _tiny(*, in_channels, pretrained):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(4)), 4

    try:
        assert "_test_tiny" in list_backbones()
        net, d = build_backbone("_test_tiny", in_channels=1)
        assert d == 4 and net(torch.zeros(3, 1, 2, 2)).shape == (3, 4)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("_test_tiny")(_tiny)
    finally:
        BACKBONES.pop("_test_tiny")


def test_preact_block_identity_and_projection_paths():
    # With zero conv weights the residual branch is 0, so the block returns its shortcut.
    identity = _PreActBlock(4, 4, stride=1).eval()
    projection = _PreActBlock(4, 8, stride=2).eval()
    for block in (identity, projection):
        nn.init.zeros_(block.conv1.weight)
        nn.init.zeros_(block.conv2.weight)
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(identity(x), x)
        # The projection reads the pre-activated input: relu(BN_eval(x)) = relu(x / sqrt(1 + eps)).
        expected = projection.shortcut(torch.relu(x / (1 + 1e-5) ** 0.5))
        out = projection(x)
    assert out.shape == (2, 8, 3, 3)
    torch.testing.assert_close(out, expected)


def test_adapt_stem_weight_keeps_the_grey_response():
    rgb = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    assert _adapt_stem_weight(rgb, 1).flatten().tolist() == [6.0]  # sum of the RGB kernels
    assert _adapt_stem_weight(rgb, 2).flatten().tolist() == [3.0, 3.0]  # mean 2 * 3/2


def test_pretrained_without_network_raises_actionable_error(monkeypatch, tmp_path):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: forces a download

    def no_network(*args, **kwargs):
        raise URLError("offline")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    with pytest.raises(PretrainedWeightsError) as info:
        build_backbone("resnet50", in_channels=3, pretrained=True)
    message = str(info.value)
    assert "needs internet" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-") in message
    assert "model.pretrained=false" in message


def test_pretrained_loads_from_hub_cache_and_adapts_grey_stem(monkeypatch, tmp_path):
    from torchvision.models import resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fake = resnet50(weights=None).state_dict()  # stands in for the ImageNet file, fc included
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(fake, checkpoints / "resnet50-0676ba61.pth")
    net, d = build_backbone("resnet50", in_channels=1, pretrained=True)
    assert d == 2048
    torch.testing.assert_close(net.conv1.weight, fake["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(net.layer4[2].conv3.weight, fake["layer4.2.conv3.weight"])

"""Feature extractors by short name: image batch (B, in_ch, H, W) -> pooled features (B, D).

docs/method.md, 'Backbones', lists the official backbones: PreAct ResNet-18 (3x3 stem) for CIFAR
and ResNet-50 for Clothing1M / Food. ``cnn28`` is this project's small network for the CPU demo on
Fashion-MNIST (28x28); it is not in the paper. Every builder is registered with
:func:`register_backbone` and returns ``(module, D)``; :func:`build_backbone` is the only entry
point the rest of the package uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from jumpray.errors import JumprayError
from jumpray.log import get_logger

__all__ = [
    "BACKBONES",
    "BackboneBuilder",
    "PretrainedWeightsError",
    "build_backbone",
    "list_backbones",
    "register_backbone",
]

_log = get_logger(__name__)

BackboneBuilder = Callable[..., tuple[nn.Module, int]]
"""``builder(*, in_channels: int, pretrained: bool) -> (module, feature_dim)``."""

BACKBONES: dict[str, BackboneBuilder] = {}


class PretrainedWeightsError(JumprayError, RuntimeError):
    """Pretrained weights were asked for but could not be loaded (usually: no internet)."""


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator that adds a builder to :data:`BACKBONES` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(builder: BackboneBuilder) -> BackboneBuilder:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        BACKBONES[name] = builder
        return builder

    return decorator


def list_backbones() -> list[str]:
    """The registered backbone names, sorted."""
    return sorted(BACKBONES)


def build_backbone(
    name: str, *, in_channels: int, pretrained: bool = False
) -> tuple[nn.Module, int]:
    """Build a registered feature extractor.

    Args:
        name: a name from :func:`list_backbones`.
        in_channels: image channels (1 for grey, 3 for RGB).
        pretrained: load ImageNet weights (only backbones that have them).

    Returns:
        The module, mapping (B, in_channels, H, W) float32 to (B, D) float32, and D.

    Raises:
        ValueError: unknown name, bad ``in_channels``, or ``pretrained`` on a backbone without
            weights.
        PretrainedWeightsError: the weights could not be downloaded or read.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    return BACKBONES[name](in_channels=in_channels, pretrained=pretrained)


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(
            f"backbone {name!r} has no pretrained weights; set model.pretrained=false "
            "or use backbone 'resnet50'"
        )


# --------------------------------------------------------------------------------------------
# cnn28: small and fast on CPU, for 28x28 / 32x32 inputs.


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm shift right after makes it redundant.
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


@register_backbone("cnn28")
def _build_cnn28(*, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    """Five 3x3 conv-BN-ReLU layers (32, 32, 64, 64, 128), two max-pools, global average pool.

    28x28 -> 14x14 -> 7x7 -> pooled; D = 128, 139,168 parameters at in_channels=1.

    The conv weights are stored channels-last: on 2 CPU cores this cut a forward+backward of a
    (128, 1, 28, 28) batch from about 100 ms to about 66 ms (torch 2.14, measured). Inputs need
    no conversion; ``.to(device)`` and ``load_state_dict`` keep the layout.
    """
    _no_pretrained("cnn28", pretrained)
    layers = [
        *_conv_bn_relu(in_channels, 32),
        *_conv_bn_relu(32, 32),
        nn.MaxPool2d(2),
        *_conv_bn_relu(32, 64),
        *_conv_bn_relu(64, 64),
        nn.MaxPool2d(2),
        *_conv_bn_relu(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last), 128


def _two_conv(in_channels: int, widths: tuple[int, int], hidden: int) -> nn.Module:
    """conv3x3-BN-ReLU-maxpool twice, then a hidden fully connected layer (D = ``hidden``).

    The adaptive pool is the identity at 28x28 (two pools give 7x7) and lets 32x32 inputs in.
    """
    c1, c2 = widths
    layers = [
        *_conv_bn_relu(in_channels, c1),
        nn.MaxPool2d(2),
        *_conv_bn_relu(c1, c2),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(c2 * 49, hidden),
        nn.ReLU(inplace=True),
    ]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


@register_backbone("small_cnn")
def _build_small_cnn(*, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    """Two conv layers (32, 64) and one hidden FC layer of 128: the size of cleanlab's tutorial
    networks. About 4.3M multiply-adds per 28x28 sample (cnn28: about 22M); D = 128.
    """
    _no_pretrained("small_cnn", pretrained)
    return _two_conv(in_channels, (32, 64), 128), 128


@register_backbone("tiny_cnn")
def _build_tiny_cnn(*, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    """Two conv layers (16, 32) and one hidden FC layer of 128: about 1.2M multiply-adds per
    28x28 sample; D = 128.
    """
    _no_pretrained("tiny_cnn", pretrained)
    return _two_conv(in_channels, (16, 32), 128), 128


# --------------------------------------------------------------------------------------------
# PreAct ResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks").


class _PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        # The projection reads the pre-activated input, as in the paper's full pre-activation unit.
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 with a 3x3 stride-1 stem (CIFAR style), D = 512.

    The last unit is followed by BN-ReLU (pre-activation leaves the trunk un-normalised) and a
    global average pool, which equals the reference's 4x4 pool at 32x32 and accepts other sizes.
    """

    feature_dim = 512

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_ch = 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [_PreActBlock(in_ch, out_ch, stride), _PreActBlock(out_ch, out_ch, 1)]
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(512)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) float32 -> (B, 512) float32."""
        out = torch.relu(self.bn(self.stages(self.stem(x))))
        return self.pool(out).flatten(1)


@register_backbone("preact_resnet18")
def _build_preact_resnet18(*, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    _no_pretrained("preact_resnet18", pretrained)
    return PreActResNet18(in_channels), PreActResNet18.feature_dim


# --------------------------------------------------------------------------------------------
# torchvision ResNet-50 without its classifier.


@register_backbone("resnet50")
def _build_resnet50(*, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    """torchvision ResNet-50 with ``fc`` replaced by Identity, D = 2048.

    With ``in_channels != 3`` the 7x7 stem is rebuilt for that many channels; with pretrained
    weights its kernel is initialised from the RGB kernel (see :func:`_adapt_stem_weight`).
    """
    from torchvision.models import ResNet50_Weights, resnet50

    model = resnet50(weights=None)
    model.fc = nn.Identity()
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    if pretrained:
        state = _load_imagenet_state(ResNet50_Weights.IMAGENET1K_V1)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if in_channels != 3:
            state["conv1.weight"] = _adapt_stem_weight(state["conv1.weight"], in_channels)
        model.load_state_dict(state)
    return model, 2048


def _load_imagenet_state(weights) -> dict[str, Tensor]:
    """Fetch torchvision weights through the torch hub cache, with an actionable error."""
    from urllib.parse import urlparse

    hub_dir = torch.hub.get_dir()
    file_name = urlparse(weights.url).path.rsplit("/", 1)[-1]
    _log.info("loading ImageNet weights %s (cache: %s/checkpoints)", file_name, hub_dir)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        raise PretrainedWeightsError(
            f"could not load ImageNet weights {file_name} ({type(exc).__name__}: {exc}). "
            f"The first use downloads them from {weights.url}, which needs internet. "
            f"Pre-download: fetch that URL on a connected machine and copy the file to "
            f"{hub_dir}/checkpoints/{file_name} (set TORCH_HOME to move the cache), "
            "or set model.pretrained=false"
        ) from exc


def _adapt_stem_weight(rgb_weight: Tensor, in_channels: int) -> Tensor:
    """Turn an RGB stem kernel (64, 3, k, k) into (64, in_channels, k, k).

    Each new channel gets the mean RGB kernel, scaled by 3 / in_channels so that an input with
    the same value on every channel gives the same response as the RGB network: for grey input
    this is the sum of the RGB kernels.
    """
    mean = rgb_weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (3.0 / in_channels)

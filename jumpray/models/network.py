"""The Jump-teaching network: one backbone, a classifier head and a semantic head.

Both heads read the same pooled feature with no stop-gradient, so both losses train the backbone.
With ``num_bits=0`` the semantic head is left out entirely: the single-head baselines (CE,
Co-teaching, JoCoR) then pay for neither its parameters nor its compute. The design is in
docs/method.md, 'Network'.
"""

from __future__ import annotations

from torch import Tensor, nn

from jumpray.models.backbones import build_backbone
from jumpray.models.heads import ClassifierHead, SemanticHead

__all__ = ["TwoHeadNet", "build_model", "count_parameters"]


class TwoHeadNet(nn.Module):
    """Backbone + classifier head (C logits) + optional semantic head (K codes).

    Args:
        backbone: maps (B, in_ch, H, W) float32 to (B, feature_dim) float32.
        feature_dim: D, the backbone's output width.
        num_classes: C.
        num_bits: K; 0 builds no semantic head.
        semantic_hidden: hidden width of the semantic MLP; None = D.
        dropout: dropout of the semantic MLP.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        feature_dim: int,
        num_classes: int,
        num_bits: int,
        semantic_hidden: int | None = None,
        dropout: float = 0.5,
    ):
        super().__init__()
        if num_bits < 0:
            raise ValueError(f"num_bits must be >= 0 (0 = no semantic head), got {num_bits}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.num_bits = num_bits
        self.classifier = ClassifierHead(feature_dim, num_classes)
        self.semantic: SemanticHead | None = None
        if num_bits > 0:
            self.semantic = SemanticHead(
                feature_dim, num_bits, hidden=semantic_hidden, dropout=dropout
            )

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) float32 images -> (B, D) float32 features."""
        return self.backbone(x)

    def forward_heads(self, features: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, D) features -> ((B, C) logits, (B, K) codes in (-1, 1) or None when K = 0)."""
        codes = None if self.semantic is None else self.semantic(features)
        return self.classifier(features), codes

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, in_ch, H, W) float32 images -> ((B, C) logits, (B, K) codes or None)."""
        return self.forward_heads(self.forward_features(x))


def build_model(
    *,
    backbone: str,
    num_classes: int,
    num_bits: int,
    in_channels: int,
    semantic_hidden: int | None = None,
    dropout: float = 0.5,
    pretrained: bool = False,
) -> TwoHeadNet:
    """Build a :class:`TwoHeadNet` from flat arguments (never a config object).

    Args:
        backbone: a registered backbone name (:func:`~jumpray.models.list_backbones`).
        num_classes: C >= 2.
        num_bits: K >= 0; 0 leaves out the semantic head.
        in_channels: image channels.
        semantic_hidden: hidden width of the semantic MLP; None = the backbone's D.
        dropout: dropout of the semantic MLP, in [0, 1).
        pretrained: ImageNet weights for the backbone (resnet50 only).

    Raises:
        ValueError: unknown backbone or out-of-range argument (the message names it).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    net, feature_dim = build_backbone(backbone, in_channels=in_channels, pretrained=pretrained)
    return TwoHeadNet(
        net,
        feature_dim=feature_dim,
        num_classes=num_classes,
        num_bits=num_bits,
        semantic_hidden=semantic_hidden,
        dropout=dropout,
    )


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``model`` (only those with requires_grad if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

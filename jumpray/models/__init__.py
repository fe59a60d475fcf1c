"""jumpray.models: two-head networks (backbone + classifier + semantic code head), by registry.

Torch and torchvision only. See docs/method.md, 'Network', for the architecture.
"""

from jumpray.models.backbones import (
    BACKBONES,
    PretrainedWeightsError,
    build_backbone,
    list_backbones,
    register_backbone,
)
from jumpray.models.heads import ClassifierHead, SemanticHead
from jumpray.models.network import TwoHeadNet, build_model, count_parameters

__all__ = [
    "BACKBONES",
    "ClassifierHead",
    "PretrainedWeightsError",
    "SemanticHead",
    "TwoHeadNet",
    "build_backbone",
    "build_model",
    "count_parameters",
    "list_backbones",
    "register_backbone",
]

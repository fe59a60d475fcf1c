"""The trained network as one servable module: uint8 images in, class probabilities out.

:class:`ProbabilityModel` wraps a :class:`~jumpray.models.TwoHeadNet` with everything a caller
would otherwise have to know: the test view (centre crop to the training size and the training
normalisation, the same :meth:`jumpray.data.augment.Augmenter.test` the scorer uses), the
classifier temperature T (``selection.temperature``, as in scoring) and the class names. It is
what ``jumpray train`` / ``clean`` log as an MLflow model (``mlflow.pytorch`` flavour,
:meth:`jumpray.tracking.MlflowTracker.log_pytorch_model`), so
``mlflow.pyfunc.load_model(uri).predict(images)`` returns the probabilities ``jumpray score``
computes with one snapshot, and ``jumpray score --checkpoint models:/NAME/VERSION`` scores with it
(:func:`jumpray.score.pipeline.snapshots_from_served`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jumpray.data.augment import make_augmenter
from jumpray.errors import DataError
from jumpray.models.network import build_model

__all__ = ["ProbabilityModel", "build_probability_model", "example_images"]


class ProbabilityModel(nn.Module):
    """uint8 (B, C, H, W) images -> (B, num_classes) float32 probabilities softmax(logits / T).

    Args:
        net: the trained two-head network (evaluation mode is set here).
        model_args: :func:`jumpray.models.build_model` arguments that rebuild ``net``.
        data: the training data's ``channels``, ``image_hw``, ``mean``, ``std`` (a checkpoint's
            ``data``).
        image_size: S of the test view; None = the smaller side of ``image_hw``.
        temperature: T (``selection.temperature``).
        class_names: the C class names (may be empty).
        config: the training run's resolved config (a dict), for scoring with this model.
        epoch: the epoch the weights are from.

    Attributes:
        net, model_args, data, image_size, temperature, class_names, config, epoch: as given.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        model_args: Mapping[str, Any],
        data: Mapping[str, Any],
        image_size: int | None = None,
        temperature: float = 1.0,
        class_names: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        epoch: int = -1,
    ):
        super().__init__()
        self.net = net.eval()
        self.model_args = dict(model_args)
        self.data = {k: data[k] for k in ("channels", "image_hw", "mean", "std")}
        self.image_size = int(image_size or min(int(v) for v in self.data["image_hw"]))
        self.temperature = float(temperature)
        self.class_names = [str(n) for n in class_names]
        self.config = dict(config or {})
        self.epoch = int(epoch)
        self.augmenter = make_augmenter(
            image_size=self.image_size,
            channels=int(self.data["channels"]),
            mean=list(self.data["mean"]),
            std=list(self.data["std"]),
            recipe="none",
        )

    @property
    def num_classes(self) -> int:
        """C."""
        return int(self.model_args["num_classes"])

    def forward(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) images (any H, W: centre-cropped and resized to S) -> (B, C)
        float32 probabilities."""
        device = next(self.net.parameters()).device
        x = self.augmenter.test(images).to(device)
        logits, _ = self.net(x)
        return torch.softmax(logits.float() / self.temperature, dim=1)


# Beside the MLflow model files: the weights and settings as tensors and plain values only, so
# jumpray loads a logged model with torch.load(weights_only=True) and never unpickles code (MLflow's
# own loader unpickles the module: that is for pyfunc users who trust the store).
WEIGHTS_FILE = "jumpray_weights.pt"


def weights_record(model: ProbabilityModel) -> dict[str, Any]:
    """What :func:`load_probability_model` rebuilds ``model`` from (weights-only loadable)."""
    return {
        "weights": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "model_args": dict(model.model_args),
        "data": {k: list(v) if isinstance(v, list | tuple) else v for k, v in model.data.items()},
        "image_size": model.image_size,
        "temperature": model.temperature,
        "class_names": list(model.class_names),
        "config": model.config,
        "epoch": model.epoch,
    }


def load_probability_model(folder: str | Path) -> ProbabilityModel:
    """The :class:`ProbabilityModel` of a logged MLflow model folder, from its
    :data:`WEIGHTS_FILE` (``torch.load(weights_only=True)``: nothing is unpickled).

    Raises:
        DataError: the folder has no :data:`WEIGHTS_FILE` (a model logged by another tool, or
            before jumpray wrote it), naming the folder and the fix.
    """
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(
            f"{folder} has no {WEIGHTS_FILE}: not a model logged by this jumpray, and loading "
            "its pickled module would run code from the store",
            fix="score with the run's checkpoint folder (OUT/checkpoint), or retrain to log it again",
        )
    record = torch.load(path, map_location="cpu", weights_only=True)
    weights = record.pop("weights")
    return build_probability_model(weights, **record)


def build_probability_model(
    weights: Mapping[str, Tensor], *, model_args: Mapping[str, Any], **kwargs: Any
) -> ProbabilityModel:
    """A :class:`ProbabilityModel` from a state dict (a checkpoint's ``model``) on the CPU.

    Args:
        weights: the network's state dict.
        model_args: :func:`jumpray.models.build_model` arguments.
        **kwargs: the other :class:`ProbabilityModel` arguments.
    """
    net = build_model(**dict(model_args))
    net.load_state_dict(dict(weights))
    return ProbabilityModel(net, model_args=model_args, **kwargs)


def example_images(model: ProbabilityModel, num: int = 2) -> np.ndarray:
    """A uint8 (num, C, S, S) batch of mid-grey images: the logged model's input example."""
    c, s = int(model.data["channels"]), model.image_size
    return np.full((num, c, s, s), 128, dtype=np.uint8)

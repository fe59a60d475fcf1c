"""The logged model's weights-only record: jumpray rebuilds a served model without unpickling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jumpray.errors import DataError
from jumpray.models import build_model
from jumpray.models.serving import (
    WEIGHTS_FILE,
    build_probability_model,
    example_images,
    load_probability_model,
    weights_record,
)

MODEL_ARGS = {"backbone": "cnn28", "num_classes": 3, "num_bits": 4, "in_channels": 1}
DATA = {"channels": 1, "image_hw": [12, 12], "mean": [0.5], "std": [0.25]}


def test_a_served_model_round_trips_through_its_weights_only_record(tmp_path):
    torch.manual_seed(0)
    served = build_probability_model(
        build_model(**MODEL_ARGS).state_dict(),
        model_args=MODEL_ARGS,
        data=DATA,
        temperature=2.0,
        class_names=["a", "b", "c"],
        config={"seed": 7},
        epoch=4,
    )
    torch.save(weights_record(served), tmp_path / WEIGHTS_FILE)
    loaded = load_probability_model(tmp_path)  # torch.load(weights_only=True) inside
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 1, 12, 12), np.uint8))
    torch.testing.assert_close(loaded(images), served(images), rtol=0, atol=1e-6)
    assert loaded.class_names == ["a", "b", "c"] and loaded.epoch == 4
    assert loaded.config == {"seed": 7} and loaded.temperature == 2.0
    assert example_images(loaded).shape == (2, 1, 12, 12)


def test_a_model_folder_without_the_record_is_refused_not_unpickled(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match=f"has no {WEIGHTS_FILE}"):
        load_probability_model(tmp_path)

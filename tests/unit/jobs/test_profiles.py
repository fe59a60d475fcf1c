"""The Fashion-MNIST profile is written once in code and once as YAML; they must agree."""

from __future__ import annotations

from pathlib import Path

from jumpray.config import RunConfig, load_config
from jumpray.jobs.demo import DEMO_DEFAULTS
from jumpray.jobs.local import LOCAL_DEFAULTS
from jumpray.jobs.profiles import FASHION_MNIST_SELECTION

YAML = Path(__file__).parents[3] / "configs" / "fashion_mnist.yaml"


def test_fashion_mnist_yaml_equals_the_local_defaults():
    assert load_config(YAML) == load_config(None, LOCAL_DEFAULTS)


def test_demo_trains_with_the_same_method_settings_as_the_yaml():
    demo, yaml = load_config(None, DEMO_DEFAULTS), load_config(YAML)
    for section in ("model", "train", "jump", "selection"):
        assert getattr(demo, section) == getattr(yaml, section), section


def test_the_profile_departs_from_the_official_defaults_only_where_measured():
    official = RunConfig().selection.model_dump()
    profile = load_config(YAML).selection.model_dump()
    changed = {k for k in official if official[k] != profile[k]}
    assert changed == set(FASHION_MNIST_SELECTION) == {"class_floor", "temperature", "blend"}

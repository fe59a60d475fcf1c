"""The Fashion-MNIST budget is written once, as YAML, which the code reads; the method settings are the
schema defaults (no per-dataset profile); configs/official.yaml is the official code's method."""

from __future__ import annotations

from pathlib import Path

import yaml

from jumpray.config import FASHION_MNIST_CONFIG, RunConfig, load_config
from jumpray.jobs.demo import DEMO_DEFAULTS
from jumpray.jobs.local import LOCAL_DEFAULTS

CONFIGS = Path(__file__).parents[3] / "configs"
YAML = CONFIGS / "fashion_mnist.yaml"


def test_the_fashion_mnist_settings_are_read_from_the_yaml_only():
    assert load_config(YAML) == load_config(None, LOCAL_DEFAULTS)
    assert FASHION_MNIST_CONFIG.resolve() == YAML.resolve()
    assert yaml.safe_load(YAML.read_text()) == LOCAL_DEFAULTS


def test_demo_trains_with_the_same_method_settings_as_the_yaml():
    demo, yaml = load_config(None, DEMO_DEFAULTS), load_config(YAML)
    for section in ("model", "train", "jump", "selection"):
        assert getattr(demo, section) == getattr(yaml, section), section


def test_fashion_mnist_needs_no_profile_only_a_budget():
    schema, yaml = RunConfig().model_dump(), load_config(YAML).model_dump()
    changed = {
        f"{section}.{key}"
        for section, values in schema.items()
        if isinstance(values, dict)
        for key in values
        if values[key] != yaml[section][key]
    }
    assert changed == {"train.epochs"}


def test_official_yaml_is_the_official_method_and_the_old_decision():
    official = load_config(CONFIGS / "official.yaml")
    sel = official.selection
    assert (sel.temperature, sel.blend, sel.class_floor, sel.tau) == (2.0, True, 0.0, 1e-3)
    assert (official.jump.interval, official.model.semantic_dim) == (1, 32)
    assert (official.score.decision, official.score.source) == ("threshold", "snapshots")
    # the schema defaults depart from it exactly where the measurement said
    schema = RunConfig()
    assert (schema.selection.temperature, schema.selection.blend) == (1.0, False)
    assert schema.selection.class_floor == 1.2
    assert (schema.score.decision, schema.score.source) == ("confident", "auto")

"""The typed config: every shipped YAML loads, unknown keys and bad values are all listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from jumpray.config import RunConfig, config_to_flat_dict, load_config, parse_overrides
from jumpray.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_configs_folder_is_not_empty():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_default_yaml_spells_out_the_schema_defaults():
    assert load_config(Path(__file__).parents[2] / "configs" / "default.yaml") == RunConfig()


def test_dotted_overrides_are_typed():
    cfg = load_config(
        None, ["train.epochs=3", "jump.interval=2", "selection.rule=guarded", "data.mean=[0.1]"]
    )
    assert cfg.train.epochs == 3 and cfg.jump.interval == 2 and cfg.selection.rule == "guarded"
    assert cfg.data.mean == [0.1]
    assert cfg.snapshots.keep == 3


def test_overrides_beat_file_beat_base(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {epochs: 4, lr: 0.1}\n")
    cfg = load_config(f, ["train.lr=0.2"], base={"train": {"epochs": 9, "batch_size": 32}})
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (4, 0.2, 32)


def test_every_problem_is_listed_at_once_with_its_key():
    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            [
                "selection.tua=0.1",
                "train.epochs=-1",
                "method.name=dividemix",
                "model.semantic_dim=24",
            ],
        )
    msg = str(err.value)
    assert "4 config problems" in msg
    assert "selection.tua: unknown key (allowed:" in msg and "tau" in msg
    assert "train.epochs" in msg
    assert "method.name" in msg and "'jumpteaching'" in msg and "dividemix" in msg
    assert "model.semantic_dim" in msg and "16 or 32" in msg


def test_cross_checks_name_the_fix():
    with pytest.raises(ConfigError, match=r"snapshots.keep=3 or more"):
        load_config(None, ["jump.interval=2", "snapshots.keep=2"])
    with pytest.raises(ConfigError, match="selection never starts"):
        load_config(None, ["train.epochs=3", "jump.warmup_epochs=3"])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["train.epochs"])
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)


def test_flat_dict_round_trip():
    cfg = load_config(None, ["jump.interval=3", "snapshots.keep=4"])
    flat = config_to_flat_dict(cfg)
    assert flat["jump.interval"] == 3 and flat["model.semantic_dim"] == 32
    assert (
        load_config(
            None, [f"{k}={v}" for k, v in flat.items() if v is not None and not isinstance(v, dict)]
        )
        == cfg
    )

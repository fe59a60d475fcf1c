"""Issue 11, defects 8 and 10 and the "Also" list: one paragraph instead of tracebacks, errors
that survive a process boundary unchanged, a console that is jumpray's, flags anywhere, shipped
configs by short name from any directory. No Ray."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from jumpray.cli import build_parser, main
from jumpray.config import load_config
from jumpray.errors import ConfigError, DataError, user_error

ROOT = Path(__file__).parents[2]


def test_errors_cross_process_boundaries_unchanged():
    config = ConfigError("model.semantic_dim=4 cannot encode 10 classes")
    data = DataError("image does not decode", shard="a.tar", key="k1", fix="repair it")
    for err in (config, data):
        back = pickle.loads(pickle.dumps(err))
        assert str(back) == str(err) and type(back) is type(err)
    assert str(pickle.loads(pickle.dumps(config))).count("config problem") == 1
    assert pickle.loads(pickle.dumps(data)).key == "k1"


def test_ray_wrapped_errors_are_unwrapped_to_the_original():
    original = DataError("image does not decode", shard="a.tar", key="k1")

    # Shaped like Ray's dual class: a subclass of the original type defined in another module,
    # whose message is the whole remote traceback (with colour codes) and whose cause is ours.
    Dual = type("RayTaskError(DataError)", (DataError,), {"__module__": "ray.exceptions"})
    wrapped = Dual("\x1b[36m(pid=1)\x1b[0m Traceback ... 50 lines")
    wrapped.cause = original
    assert user_error(wrapped) is original


def test_model_that_cannot_encode_the_classes_fails_on_the_driver():
    pytest.importorskip("ray")
    from jumpray.train.launch import check_model_fits

    cfg = load_config(None, ["model.semantic_dim=4"])
    with pytest.raises(ConfigError, match="semantic_dim=4 cannot encode 10 classes") as err:
        check_model_fits(cfg, 10)
    assert str(err.value).count("config problem") == 1
    check_model_fits(cfg, 8)
    check_model_fits(load_config(None, ["model.semantic_dim=4", "method.name=ce"]), 10)


def test_debug_and_verbose_after_the_command():
    parser = build_parser("train")
    args = parser.parse_args(["train", "--shards", "s", "--out", "o", "--debug", "--verbose"])
    assert args.debug and args.verbose
    args = parser.parse_args(["--debug", "train", "--shards", "s", "--out", "o"])
    assert args.debug and not args.verbose
    args = build_parser("shards").parse_args(
        ["shards", "from-folder", "d", "--out", "o", "--debug"]
    )
    assert args.debug


def test_shipped_config_by_short_name_from_another_directory(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = (
        "from jumpray.config import load_config\n"
        "cfg = load_config('clothing1m')\n"
        "print(cfg.data.image_size, cfg.model.backbone)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["224", "resnet50"]
    with pytest.raises(ConfigError, match="shipped: .*clothing1m.*smoke"):
        load_config("no-such-config")


def test_error_texts_speak_the_cli_not_the_python_api(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "index.json").write_text('{"format": "jumpray-shards/1"}')
    assert main(["shards", "fashion-mnist", "--out", str(tmp_path / "o"), "--limit", "5"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err
    with pytest.raises(ConfigError) as info:
        load_config(None, ["jump.warmup_epochs=5", "train.epochs=3"])
    assert "§" not in str(info.value) and "reference" not in str(info.value)


def test_capture_sends_everything_but_jumpray_lines_to_the_log(tmp_path):
    code = """
import logging, os, sys
from jumpray.log import capture_to, echo, get_logger, setup_logging
setup_logging()
with capture_to(sys.argv[1]):
    get_logger("jumpray.x").info("jumpray line")
    echo("summary line")
    print("print from a library")
    logging.getLogger("ray.data").warning("Execution plan of Dataset")
    logging.getLogger("ray").warning("dashboard at \x1b[1m\x1b[32m%s\x1b[0m", "http://x")
    os.write(2, b"[core_worker.cc:2465] C++ noise\\n")
    os.write(1, b"\\x1b[36m(pid=1)\\x1b[0m worker noise\\n")
print("after")
"""
    log = tmp_path / "logs" / "run.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code, str(log)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["summary line", "after"]
    assert out.stderr.count("\n") == 1 and "jumpray line" in out.stderr
    text = log.read_text()
    for noise in ("print from a library", "Execution plan", "C++ noise", "worker noise"):
        assert noise in text
    assert "jumpray line" in text  # the log is the whole record
    assert "dashboard at http://x" in text and "\x1b[1m" not in text  # no colour in the file


def test_summary_says_when_mlflow_recorded_nothing(tmp_path):
    from jumpray.config import TrackingConfig
    from jumpray.jobs._run import tracking_lines
    from jumpray.jobs.score import summary_text
    from jumpray.tracking import build_tracker

    with pytest.warns(RuntimeWarning):
        dead = build_tracker(TrackingConfig(uri="http://127.0.0.1:9", experiment="e"))
    [line] = tracking_lines(dead, kept_in="o/summary.json")
    assert "metrics NOT recorded (MLflow unreachable at http://127.0.0.1:9)" in line
    assert "kept in o/summary.json" in line
    # "scoring: 0 samples/s" for a slow, tiny run: the counts say what happened.
    s = {
        "num_samples": 1,
        "shards": "s",
        "num_quarantined": 0,
        "num_label_issues": 0,
        "estimated_noise_rate": 0.0,
        "decision": {
            "combine": "mean",
            "formula": "prob",
            "snapshot_epochs": [1],
            "threshold": 0.1,
        },
        "scoring_wall_s": 9.2,
        "scoring_samples_per_s": 0.11,
    }
    text = summary_text(s, out=Path("o"), command="score")
    assert "scoring: 1 samples in 9.2 s (0.1 samples/s)" in text

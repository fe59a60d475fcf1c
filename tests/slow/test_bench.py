"""``jumpray bench --profile tiny`` end to end: every method trains, bench.json keeps its contract.

Real Fashion-MNIST (1000 samples, sym:0.4, 3 epochs), one fresh process per method, cleanlab with
2 folds, then the timing phase (2 rounds: the four trainers taking turns in one process for 5
timed steps each, then a short memory run of each in its own process); several minutes on the
shared 2-core box, hence ``slow``. Timings are never asserted, only that they were taken and
summarized.
"""

from __future__ import annotations

import json

import pytest

from jumpray.cli import main

# No Ray: the bench runs each method in a plain process of its own (so it runs beside the Ray
# tests under `pytest -n 2`, tests/conftest.py).
pytestmark = pytest.mark.slow

METHODS = {"ce", "coteaching", "jocor", "jumpteaching", "cleanlab"}
ROW_KEYS = {
    "method",
    "noise",
    "test_accuracy",
    "precision",
    "recall",
    "f1",
    "samples_per_s",
    "peak_memory_mb",
    "wall_s",
}


@pytest.fixture(scope="module")
def bench_out(fashion_mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # one torch thread: on the shared box two threads per process spin against other work
    args = ["bench", "--profile", "tiny", "--out", str(out), "--device", "cpu", "--threads", "1"]
    assert main(args) == 0
    return out


def test_bench_json_keeps_the_contract(bench_out):
    report = json.loads((bench_out / "bench.json").read_text())
    assert report["profile"] == "tiny" and report["device"] == "cpu"
    rows = report["rows"]
    assert {(r["method"], r["noise"]) for r in rows} == {(m, "sym:0.4") for m in METHODS}
    for row in rows:
        assert set(row) >= ROW_KEYS, row["method"]
        assert row["samples_per_s"] > 0 and row["wall_s"] > 0 and row["peak_memory_mb"] >= 0
        assert row["num_train"] == 1000 and row["epochs"] == 3
        assert row["realized_noise_rate"] == pytest.approx(0.4, abs=1e-3)
        assert 0.0 <= row["selection_precision"] <= 1.0
        if row["method"] == "ce":  # keeps every sample: flags nothing
            assert row["f1"] is None and row["selection_precision"] == pytest.approx(0.6, abs=1e-3)
        else:
            assert 0.0 < row["f1"] <= 1.0 and 0.0 < row["recall"] <= 1.0, row["method"]
    # ratios: JT over each of the 4 others; the six goals, each with a verdict
    assert {x["other"] for x in report["ratios"]} == METHODS - {"jumpteaching"}
    assert len(report["goals"]) == 6
    # speed and memory may be undecided (a spread across the line); the others are one run each
    assert all(g["reading"] in ("met", "missed", "undecided") for g in report["goals"])
    assert all(g["met"] in (True, False) for g in report["goals"] if g["reading"] != "undecided")


TIMED = ["jumpteaching", "ce", "coteaching", "jocor"]


def test_timing_phase_runs_interleaved_rounds_and_summarizes_them(bench_out):
    timing = json.loads((bench_out / "bench.json").read_text())["timing"]
    s = timing["settings"]
    shape = (s["rounds"], s["steps"], s["block"], s["warmup_steps"], s["memory_steps"])
    assert shape == (2, 5, 2, 2, 3)
    assert s["methods"] == TIMED and s["device"] == "cpu" and s["amp"] == "off"
    # per round: one speed run (the four methods taking turns of 2 steps until each has timed 5
    # steps of batch 32), then a memory run of 3 steps per method, each its own process
    assert [(r["round"], r["method"]) for r in timing["rows"]] == [
        (r, m) for r in range(2) for m in TIMED
    ]
    for row in timing["rows"]:
        assert row["num_samples"] == 5 * 32 and row["steps"] == 5 and row["epoch"] == 1
        assert row["memory_steps"] == 3 and row["alone_samples_per_s"] > 0
        assert row["samples_per_s"] > 0 and row["peak_memory_mb"] > 0
        assert len(row["load_average"]) == 2
        # the selecting phase: Co-teaching/JoCoR drop the forget rate, JT's gates start open
        if row["method"] in ("coteaching", "jocor"):
            assert row["selected_fraction"] < 1.0
    summary = timing["summary"]
    for m in TIMED:
        for key in ("samples_per_s", "peak_memory_mb"):
            v = summary["methods"][m][key]
            assert v["min"] <= v["median"] <= v["max"] and v["n"] == 2
    assert set(summary["ratios"]) == {"ce", "coteaching", "jocor"}
    for ratio in summary["ratios"].values():
        assert len(ratio["throughput_rounds"]) == 2 and ratio["throughput"]["n"] == 2
    goals = {g["name"]: g for g in json.loads((bench_out / "bench.json").read_text())["goals"]}
    assert goals["throughput_vs_two_network"]["source"] == "timing phase, 2 rounds"
    assert set(goals["throughput_vs_two_network"]["values"]) == {"vs coteaching", "vs jocor"}


def test_every_method_trained_above_chance(bench_out):
    rows = json.loads((bench_out / "bench.json").read_text())["rows"]
    accuracy = {r["method"]: r["test_accuracy"] for r in rows}
    assert all(a > 0.1 for a in accuracy.values()), accuracy  # 10 classes: chance is 0.1


def test_selecting_methods_keep_cleaner_samples_than_the_data(bench_out):
    rows = json.loads((bench_out / "bench.json").read_text())["rows"]
    for row in rows:
        if row["method"] != "ce":
            assert row["selection_precision"] > 0.6, row  # the data is 60 % clean


def test_markdown_and_plot_are_written(bench_out):
    md = (bench_out / "bench.md").read_text()
    assert md.startswith("# jumpray bench: tiny profile")
    for label in ("Jump-teaching", "CE", "Co-teaching", "JoCoR", "cleanlab"):
        assert f"| sym:0.4 | {label}" in md or f"| sym:0.4 | **{label}**" in md
    assert "Timing phase: 2 rounds" in md
    assert "| Jump-teaching / | speed ×, median (min–max) |" in md
    assert "| Co-teaching | " in md and "1-minute load average before and after" in md
    assert (bench_out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    # only the three outputs: the temporary data folder is gone
    assert sorted(p.name for p in bench_out.iterdir()) == ["bench.json", "bench.md", "bench.png"]

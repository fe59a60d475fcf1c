"""The timing phase's statistics and readings on hand-made rows (no training, no timing)."""

from __future__ import annotations

import pytest

from jumpray.jobs import bench
from jumpray.jobs._bench_report import (
    check_goals,
    combine_readings,
    format_markdown,
    plot_report,
    read_spread,
    spread,
    summarize_timing,
)


def _t(round_, method, sps, mem):
    return {
        "round": round_,
        "method": method,
        "samples_per_s": sps,
        "samples_per_cpu_s": 2 * sps if round_ == 1 else sps,  # round 1: half a core
        "peak_memory_mb": mem,
        "other_cpu_cores": 0.1 * round_,
        "load_average": [1.0, 1.5],
    }


# Round 1 is a slow round for everyone (machine busy): per-round ratios stay put, while the
# ratio of per-method medians would not be what any one round saw.
TIMING = [
    _t(0, "jumpteaching", 2000.0, 50.0),
    _t(0, "ce", 2000.0, 40.0),
    _t(0, "coteaching", 1000.0, 100.0),
    _t(1, "jumpteaching", 1000.0, 52.0),
    _t(1, "ce", 800.0, 40.0),
    _t(1, "coteaching", 400.0, 104.0),
    _t(2, "jumpteaching", 1800.0, 48.0),
    _t(2, "ce", 2000.0, 40.0),
    {"round": 2, "method": "coteaching", "error": "worker exited with 1"},
]


def test_spread_is_median_min_max_and_count():
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert spread([4.0, 1.0]) == {"median": 2.5, "min": 1.0, "max": 4.0, "n": 2}
    assert spread([]) is None


@pytest.mark.parametrize(
    ("low", "high", "line", "higher", "reading"),
    [
        (1.9, 2.4, 1.8, True, "met"),
        (1.8, 2.4, 1.8, True, "met"),  # the line itself is on the goal's side
        (1.2, 1.7, 1.8, True, "missed"),
        (1.5, 2.1, 1.8, True, "undecided"),
        (0.4, 0.6, 0.6, False, "met"),
        (0.61, 0.8, 0.6, False, "missed"),
        (0.5, 0.7, 0.6, False, "undecided"),
        (0.9, 0.9, 0.9, True, "met"),  # one run: never undecided
    ],
)
def test_a_goal_is_read_from_where_the_whole_spread_lies(low, high, line, higher, reading):
    assert read_spread(low, high, line=line, higher_is_better=higher) == reading


def test_several_comparisons_combine_into_one_reading():
    assert combine_readings(["met", "met"]) == "met"
    assert combine_readings(["met", "undecided"]) == "undecided"
    assert combine_readings(["undecided", "missed"]) == "missed"
    assert combine_readings([]) == "not measured"


def test_ratios_are_taken_within_each_round_then_summarized():
    s = summarize_timing(TIMING)
    jt = s["methods"]["jumpteaching"]["samples_per_s"]
    assert jt == {"median": 1800.0, "min": 1000.0, "max": 2000.0, "n": 3}
    ce = s["ratios"]["ce"]
    assert ce["throughput_rounds"] == pytest.approx([1.0, 1.25, 0.9])
    assert ce["throughput"] == pytest.approx({"median": 1.0, "min": 0.9, "max": 1.25, "n": 3})
    assert ce["cpu_throughput"] == ce["throughput"]  # the same per-round ratios here
    co = s["ratios"]["coteaching"]
    # round 2's Co-teaching run failed: that round gives no Co-teaching ratio
    assert co["throughput_rounds"] == pytest.approx([2.0, 2.5])
    assert co["memory_rounds"] == pytest.approx([0.5, 0.5])
    assert s["methods"]["coteaching"]["samples_per_s"]["n"] == 2
    assert "jumpteaching" not in s["ratios"]


def test_goals_read_the_timing_spreads_instead_of_the_single_runs():
    summary = summarize_timing(TIMING)
    goals = {g["name"]: g for g in check_goals([], [], summary)}
    two_net = goals["throughput_vs_two_network"]  # 2.0 and 2.5 >= 1.8; JoCoR not timed
    assert (two_net["reading"], two_net["met"]) == ("met", True)
    assert two_net["values"] == {"vs coteaching": {"median": 2.25, "min": 2.0, "max": 2.5}}
    assert two_net["source"] == "timing phase, 2 rounds"
    assert goals["throughput_vs_ce"]["reading"] == "met"  # 0.9 .. 1.25 >= 0.9
    assert goals["memory_vs_two_network"]["reading"] == "met"  # 0.5 <= 0.6
    assert goals["f1_vs_cleanlab"]["reading"] == "not measured"
    slow = [
        r | {"samples_per_s": 700.0} if r["method"] == "ce" and r["round"] == 1 else r
        for r in TIMING
    ]
    goals = {g["name"]: g for g in check_goals([], [], summarize_timing(slow))}
    # JT/CE is now 1.0, 1.43, 0.9: still met; a round at 0.8 would make it undecided
    assert goals["throughput_vs_ce"]["reading"] == "met"
    slower = [
        r | {"samples_per_s": 2250.0} if r["method"] == "ce" and r["round"] == 2 else r
        for r in TIMING
    ]
    g = {g["name"]: g for g in check_goals([], [], summarize_timing(slower))}["throughput_vs_ce"]
    assert (g["reading"], g["met"]) == ("undecided", None)  # 0.8 .. 1.25 crosses 0.9


def _report():
    return {
        "profile": "quick",
        "device": "cpu",
        "date": "2026-01-01 00:00 UTC",
        "total_wall_s": 60.0,
        "machine": {"cpu": "Test CPU", "cpu_count": 2, "torch": "2.14.1", "torch_threads": 2},
        "settings": {
            "num_train": 1000,
            "num_test": 1000,
            "backbone": "tiny_cnn",
            "epochs": 2,
            "batch_size": 128,
            "lr": 0.05,
            "seed": 0,
            "warmup_epochs": 1,
            "num_gradual": 1,
            "folds": 2,
        },
        "rows": [],
        "ratios": [],
        "goals": check_goals([], [], summarize_timing(TIMING)),
        "timing": {
            "settings": {
                "rounds": 3,
                "steps": 40,
                "block": 10,
                "warmup_steps": 5,
                "memory_steps": 10,
                "methods": ["jumpteaching", "ce", "coteaching"],
                "noise": "sym:0.4",
                "batch_size": 128,
                "backbone": "tiny_cnn",
                "epoch": 2,
                "device": "cpu",
                "torch_threads": 2,
                "amp": "off",
                "channels_last": False,
            },
            "rows": TIMING,
            "summary": summarize_timing(TIMING),
            "load_average": [1.25, 3.5],
        },
    }


def test_markdown_carries_medians_with_their_spread_and_the_readings():
    md = format_markdown(_report())
    assert "Quality runs: not run" in md
    assert "Machine load during the runs" not in md  # no quality runs: the timing phase says it
    assert (
        "Timing phase: 3 rounds" in md
        and "take turns of 10 training steps of batch 128 until each has run 40" in md
    )
    assert "| Jump-teaching | 1800 (1000–2000) | 50 (48–52) |" in md
    assert "| Co-teaching | 2.25 (2.00–2.50) | 0.50 (0.50–0.50) | 2.25 (2.00–2.50) |" in md
    assert "| CE | 1.00 (0.90–1.25) |" in md
    assert "load average before and after the timing phase: 1.25 / 3.50" in md
    assert "other programs kept 0.00 to 0.20 cores busy" in md
    assert (
        "JT training throughput >= 1.8x Co-teaching's and JoCoR's: met "
        "(vs coteaching 2.25 (2.00–2.50); timing phase, 2 rounds)"
    ) in md
    assert "JT detection F1 >= cleanlab's: not measured\n" in md


def test_plot_draws_the_timing_spreads(tmp_path):
    path = tmp_path / "bench.png"
    plot_report(_report(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_round_takes_its_speed_from_the_speed_run_and_its_memory_from_its_own_run():
    memory = {
        "round": 0,
        "method": "ce",
        "samples_per_s": 900.0,
        "steps": 10,
        "peak_memory_mb": 40.0,
    }
    speed = {
        "round": 0,
        "steps": 60,
        "other_cpu_cores": 0.02,
        "methods": {
            "ce": {
                "samples_per_s": 2000.0,
                "mean_samples_per_s": 1950.0,
                "samples_per_cpu_s": 1990.0,
                "step_ms": 64.0,
                "num_samples": 7680,
            }
        },
    }
    row = bench._merge_speed(memory, speed)
    assert row["samples_per_s"] == 2000.0 and row["alone_samples_per_s"] == 900.0
    assert (row["steps"], row["memory_steps"], row["peak_memory_mb"]) == (60, 10, 40.0)
    # a failed speed run: the round keeps its memory figure and gives no speed ratio
    failed = bench._merge_speed(memory, {"round": 0, "error": "worker exited with 1"})
    assert failed["samples_per_s"] is None and failed["speed_error"] == "worker exited with 1"
    jt = dict(memory, method="jumpteaching", peak_memory_mb=30.0)
    summary = summarize_timing([bench._merge_speed(jt, {"error": "x"}), failed])
    assert summary["ratios"]["ce"]["throughput"] is None
    assert summary["ratios"]["ce"]["memory"]["median"] == pytest.approx(0.75)
    assert summary["methods"]["ce"]["samples_per_s"] is None

"""The bench's ratio, goal and table code on hand-made rows (no training)."""

from __future__ import annotations

import pytest

from jumpray.jobs._bench_report import check_goals, compute_ratios, format_markdown, plot_report


def _row(method, noise, acc, f1, sps, mem, wall):
    det = None if f1 is None else f1
    return {
        "method": method,
        "noise": noise,
        "test_accuracy": acc,
        "precision": det,
        "recall": det,
        "f1": det,
        "selection_precision": 0.9,
        "samples_per_s": sps,
        "peak_memory_mb": mem,
        "wall_s": wall,
        "load_average": [0.5, 2.0] if method == "jocor" else [1.0, None],
        "other_cpu_cores": {"ce": 0.25, "jocor": 0.5}.get(method, 0.0),
    }


ROWS = [
    _row("jumpteaching", "sym:0.4", 0.80, 0.90, 1000.0, 60.0, 100.0),
    _row("ce", "sym:0.4", 0.70, None, 1000.0, 50.0, 90.0),
    _row("coteaching", "sym:0.4", 0.78, 0.85, 500.0, 100.0, 200.0),
    _row("jocor", "sym:0.4", 0.79, 0.80, 400.0, 120.0, 250.0),
    _row("cleanlab", "sym:0.4", 0.75, 0.95, 1000.0, 50.0, 400.0),
    _row("jumpteaching", "pairflip:0.45", 0.60, 0.50, 900.0, 60.0, 100.0),
    _row("ce", "pairflip:0.45", 0.65, None, 1000.0, 60.0, 90.0),
    {"method": "coteaching", "noise": "pairflip:0.45", "error": "worker exited with 1"},
]


def test_ratios_are_jumpteaching_over_the_other_within_each_setting():
    r = {(x["noise"], x["other"]): x for x in compute_ratios(ROWS)}
    # the failed run and JT itself give no ratio
    assert set(r) == {
        ("sym:0.4", "ce"),
        ("sym:0.4", "coteaching"),
        ("sym:0.4", "jocor"),
        ("sym:0.4", "cleanlab"),
        ("pairflip:0.45", "ce"),
    }
    co = r[("sym:0.4", "coteaching")]
    assert co["throughput"] == pytest.approx(2.0)  # 1000 / 500
    assert co["memory"] == pytest.approx(0.6)  # 60 / 100
    assert co["wall"] == pytest.approx(0.5)  # 100 / 200
    assert co["accuracy_delta"] == pytest.approx(0.02)
    assert co["f1_delta"] == pytest.approx(0.05)
    assert r[("sym:0.4", "ce")]["f1_delta"] is None  # CE flags nothing
    assert r[("sym:0.4", "jocor")]["throughput"] == pytest.approx(2.5)
    assert r[("pairflip:0.45", "ce")]["throughput"] == pytest.approx(0.9)
    assert r[("pairflip:0.45", "ce")]["memory"] == pytest.approx(1.0)


def test_goals_verdicts_follow_the_thresholds():
    goals = {g["name"]: g for g in check_goals(ROWS, compute_ratios(ROWS))}
    # 2.0 and 2.5 >= 1.8 (the pairflip co-teaching run failed: no figure, no verdict from it)
    assert goals["throughput_vs_two_network"]["met"] is True
    assert goals["throughput_vs_two_network"]["values"] == {
        "sym:0.4 vs coteaching": 2.0,
        "sym:0.4 vs jocor": 2.5,
    }
    assert goals["throughput_vs_ce"]["met"] is True  # 1.0 and 0.9 (the bound itself)
    assert goals["memory_vs_two_network"]["met"] is True  # 0.6 and 0.5
    # sym: 0.80 - 0.79 = +0.01; pairflip: 0.60 - 0.65 = -0.05 -> missed
    assert goals["accuracy_vs_best_baseline"]["met"] is False
    assert goals["accuracy_vs_best_baseline"]["values"] == {
        "sym:0.4": pytest.approx(0.01),
        "pairflip:0.45": pytest.approx(-0.05),
    }
    assert goals["f1_vs_cleanlab"]["met"] is False  # 0.90 < 0.95
    assert goals["wall_vs_cleanlab"]["met"] is True  # 100 / 400 = 0.25 < 0.3


def test_goal_without_the_methods_it_compares_is_not_measured():
    rows = [r for r in ROWS[:2]]
    goals = {g["name"]: g for g in check_goals(rows, compute_ratios(rows))}
    assert goals["throughput_vs_two_network"]["met"] is None
    assert goals["wall_vs_cleanlab"]["met"] is None
    assert goals["throughput_vs_ce"]["met"] is True


def _report(rows):
    ratios = compute_ratios(rows)
    return {
        "profile": "tiny",
        "device": "cpu",
        "date": "2026-01-01 00:00 UTC",
        "total_wall_s": 120.0,
        "machine": {"cpu": "Test CPU", "cpu_count": 2, "torch": "2.14.1", "torch_threads": 2},
        "settings": {
            "num_train": 1000,
            "num_test": 1000,
            "backbone": "cnn28",
            "epochs": 2,
            "batch_size": 32,
            "lr": 0.05,
            "seed": 0,
            "warmup_epochs": 1,
            "num_gradual": 1,
            "folds": 2,
        },
        "rows": rows,
        "ratios": ratios,
        "goals": check_goals(rows, ratios),
    }


def test_markdown_has_one_line_per_row_with_ratios_and_the_failures(tmp_path):
    md = format_markdown(_report(ROWS))
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(table) == 1 + len(ROWS)  # header + rows
    co = next(ln for ln in table if ln.startswith("| sym:0.4 | Co-teaching"))
    cells = [c.strip() for c in co.strip("|").split("|")]
    # acc, P, R, F1, kept clean, samples/s, MB, wall, JT speed, JT mem, JT wall
    assert cells[2:] == ["0.7800", "0.850", "0.850", "0.850", "0.900", "500", "100", "200"] + [
        "2.00",
        "0.60",
        "0.50",
    ]
    ce = next(ln for ln in table if ln.startswith("| sym:0.4 | CE"))
    assert "| – | – | – |" in ce  # CE has no detection figures
    assert "| pairflip:0.45 | Co-teaching | failed: worker exited with 1 |" in md
    assert "2026-01-01 00:00 UTC" in md and "Test CPU" in md
    assert "load average at the runs' starts and ends: 0.5 to 2.0" in md
    assert "Other programs kept 0.00 to 0.50 cores busy" in md
    # JoCoR's run was disturbed (0.5 > 0.3 cores), CE's (0.25) was not
    jocor = next(ln for ln in table if ln.startswith("| sym:0.4 | JoCoR"))
    assert "| 400\\* |" in jocor and "| 1000 |" in ce
    assert "\\* other programs kept more than 0.3 cores busy during this run" in md
    assert "JT test accuracy >= the best baseline's, every setting: **missed**" in md


def test_plot_is_written_atomically_as_png(tmp_path):
    path = tmp_path / "bench.png"
    plot_report(_report(ROWS), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.png"]

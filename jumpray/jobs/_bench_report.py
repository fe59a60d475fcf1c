"""The bench's tables: ratios per noise setting, the issue's goals, ``bench.md`` and the PNG.

Pure functions over the rows of ``bench.json`` (docs/contract.md), so they are tested on hand-made
rows. Every ratio is Jump-teaching's figure divided by the other method's, computed within one
noise setting (the runs of one setting ran back to back, so machine drift touches them alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jumpray.plots import pyplot, save_figure

__all__ = [
    "JT",
    "compute_ratios",
    "check_goals",
    "format_markdown",
    "plot_report",
    "GOALS",
    "DISTURBED_CORES",
]

JT = "jumpteaching"
# A run during which other programs kept more cores than this busy has disturbed timings.
DISTURBED_CORES = 0.3
TWO_NET = ("coteaching", "jocor")
LABELS = {
    "jumpteaching": "Jump-teaching",
    "ce": "CE",
    "coteaching": "Co-teaching",
    "jocor": "JoCoR",
    "cleanlab": "cleanlab",
}

# name -> what the issue asks (the paper's claims, issue #7).
GOALS: dict[str, str] = {
    "throughput_vs_two_network": "JT training throughput >= 1.8x Co-teaching's and JoCoR's",
    "throughput_vs_ce": "JT training throughput >= 0.9x plain CE's",
    "memory_vs_two_network": "JT peak memory <= 0.6x Co-teaching's and JoCoR's",
    "accuracy_vs_best_baseline": "JT test accuracy >= the best baseline's, every setting",
    "f1_vs_cleanlab": "JT detection F1 >= cleanlab's",
    "wall_vs_cleanlab": "JT wall time < 0.3x cleanlab's",
}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _by_noise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row.get("error") is None:
            out.setdefault(row["noise"], {})[row["method"]] = row
    return out


def compute_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jump-teaching / each other method, per noise setting.

    Returns:
        One dict per (noise, other method): ``throughput``, ``memory`` and ``wall`` ratios
        (None where a figure is missing or the divisor is 0), ``accuracy_delta`` (JT minus
        other) and ``f1_delta`` (None unless both flag samples).
    """
    out = []
    for noise, methods in _by_noise(rows).items():
        jt = methods.get(JT)
        if jt is None:
            continue
        for name, other in methods.items():
            if name == JT:
                continue
            f1 = None
            if jt.get("f1") is not None and other.get("f1") is not None:
                f1 = jt["f1"] - other["f1"]
            out.append(
                {
                    "noise": noise,
                    "other": name,
                    "throughput": _ratio(jt["samples_per_s"], other["samples_per_s"]),
                    "memory": _ratio(jt["peak_memory_mb"], other["peak_memory_mb"]),
                    "wall": _ratio(jt["wall_s"], other["wall_s"]),
                    "accuracy_delta": jt["test_accuracy"] - other["test_accuracy"],
                    "f1_delta": f1,
                }
            )
    return out


def _goal(name: str, values: dict[str, Any], ok: list[bool]) -> dict[str, Any]:
    return {
        "name": name,
        "description": GOALS[name],
        "met": all(ok) if ok else None,
        "values": values,
    }


def check_goals(
    rows: Sequence[dict[str, Any]], ratios: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each goal of :data:`GOALS`, met or not, with the per-setting figures behind the verdict.

    ``met`` is None when the methods a goal compares were not run.
    """
    r = {(x["noise"], x["other"]): x for x in ratios}
    noises = list(_by_noise(rows))
    results = []

    def ratio_goal(name: str, key: str, others: Sequence[str], test) -> None:
        values, ok = {}, []
        for noise in noises:
            for other in others:
                value = r.get((noise, other), {}).get(key)
                if value is not None:
                    values[f"{noise} vs {other}"] = round(value, 3)
                    ok.append(bool(test(value)))
        results.append(_goal(name, values, ok))

    ratio_goal("throughput_vs_two_network", "throughput", TWO_NET, lambda v: v >= 1.8)
    ratio_goal("throughput_vs_ce", "throughput", ("ce",), lambda v: v >= 0.9)
    ratio_goal("memory_vs_two_network", "memory", TWO_NET, lambda v: v <= 0.6)
    values, ok = {}, []
    for noise, methods in _by_noise(rows).items():
        others = [m["test_accuracy"] for name, m in methods.items() if name != JT]
        if JT in methods and others:
            margin = methods[JT]["test_accuracy"] - max(others)
            values[noise] = round(margin, 4)
            ok.append(margin >= 0)
    results.append(_goal("accuracy_vs_best_baseline", values, ok))
    ratio_goal("f1_vs_cleanlab", "f1_delta", ("cleanlab",), lambda v: v >= 0)
    ratio_goal("wall_vs_cleanlab", "wall", ("cleanlab",), lambda v: v < 0.3)
    return results


def _load_line(rows: Sequence[dict[str, Any]]) -> str:
    others = [r["other_cpu_cores"] for r in rows if r.get("other_cpu_cores") is not None]
    loads = [x for r in rows for x in (r.get("load_average") or []) if x is not None]
    parts = []
    if others:
        parts.append(
            f"Other programs kept {min(others):.2f} to {max(others):.2f} cores busy during the runs"
            " (`other_cpu_cores` per row in bench.json; timings taken beside other work read low)"
        )
    if loads:
        parts.append(
            f"1-minute load average at the runs' starts and ends: {min(loads):.1f} to {max(loads):.1f}"
        )
    return ". ".join(parts) + "." if parts else "Machine load during the runs: not recorded."


def _disturbed_mark(row: dict[str, Any]) -> str:
    return "\\*" if (row.get("other_cpu_cores") or 0.0) > DISTURBED_CORES else ""


def _fmt(value: Any, spec: str, *, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def format_markdown(report: dict[str, Any]) -> str:
    """``bench.md``: a header (date, machine, settings), one table, the goals, the definitions."""
    s, m = report["settings"], report["machine"]
    ratios = {(x["noise"], x["other"]): x for x in report["ratios"]}
    lines = [
        f"# jumpray bench: {report['profile']} profile",
        "",
        f"{report['date']} · {m['cpu']} · {m['cpu_count']} CPUs · torch {m['torch']}, "
        f"{m['torch_threads']} threads · device {report['device']} · total {report['total_wall_s'] / 60:.1f} min",
        "",
        _load_line(report["rows"]),
        "",
        f"Fashion-MNIST, first {s['num_train']} training samples, {s['num_test']} test samples; "
        f"backbone {s['backbone']}, {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']}, "
        f"seed {s['seed']}; JT warm-up {s['warmup_epochs']} epochs; Co-teaching/JoCoR forget rate = "
        f"the realized noise rate, ramped over {s['num_gradual']} epochs; cleanlab {s['folds']}-fold.",
        "",
        "| noise | method | test acc | det. P | det. R | det. F1 | kept clean | samples/s | peak MB "
        "| wall s | JT speed × | JT mem × | JT wall × |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        if row.get("error") is not None:
            lines.append(f"| {row['noise']} | {LABELS[row['method']]} | failed: {row['error']} |")
            continue
        x = ratios.get((row["noise"], row["method"]), {})
        lines.append(
            "| "
            + " | ".join(
                [
                    row["noise"],
                    ("**Jump-teaching**" if row["method"] == JT else LABELS[row["method"]]),
                    _fmt(row["test_accuracy"], ".4f"),
                    _fmt(row["precision"], ".3f"),
                    _fmt(row["recall"], ".3f"),
                    _fmt(row["f1"], ".3f"),
                    _fmt(row["selection_precision"], ".3f"),
                    _fmt(row["samples_per_s"], ".0f") + _disturbed_mark(row),
                    _fmt(row["peak_memory_mb"], ".0f"),
                    _fmt(row["wall_s"], ".0f"),
                    _fmt(x.get("throughput"), ".2f"),
                    _fmt(x.get("memory"), ".2f"),
                    _fmt(x.get("wall"), ".2f"),
                ]
            )
            + " |"
        )
    if any(_disturbed_mark(r) for r in report["rows"]):
        lines += [
            "",
            f"\\* other programs kept more than {DISTURBED_CORES} cores busy during this run "
            "(`other_cpu_cores`): its timings read low.",
        ]
    lines += ["", "Goals (issue #7):", ""]
    for g in report["goals"]:
        verdict = {True: "met", False: "**missed**", None: "not measured"}[g["met"]]
        values = ", ".join(
            f"{k} {v:+.4f}" if "accuracy" in g["name"] else f"{k} {v}"
            for k, v in g["values"].items()
        )
        lines.append(f"- {g['description']}: {verdict} ({values})")
    lines += ["", *_DEFINITIONS]
    return "\n".join(lines) + "\n"


_DEFINITIONS = [
    "Definitions: *det. P/R/F1* = detection of wrong labels (`given != clean`): a selecting method",
    "flags the samples whose gradient did not count in the last epoch; cleanlab flags its",
    "`find_label_issues` mask over K-fold out-of-sample probabilities; CE flags nothing (–).",
    "*kept clean* = fraction of the kept samples whose label is right. *samples/s* = training",
    "samples per second over the epochs after the first, evaluation excluded (cleanlab: all its",
    "trainings). *peak MB* = CPU: peak anonymous resident memory (`RssAnon`, sampled every 10 ms)",
    "during training above the run's own idle baseline, each run in a fresh process whose torch",
    "runtime was first warmed by a throwaway 2-image step (about 90 MB of thread pools and caches,",
    "the same for every method, like a GPU's CUDA context); GPU: `torch.cuda.max_memory_allocated`.",
    "*wall s* =",
    "training only (cleanlab: K fold trainings + out-of-sample prediction + `find_label_issues` +",
    "one retrain on the kept samples, whose model gives cleanlab's test accuracy). *JT … ×* =",
    "Jump-teaching's figure divided by this row's, same noise setting. Two-network methods report",
    "the first network's test accuracy.",
]


def plot_report(report: dict[str, Any], path: Path) -> None:
    """A 2x2 PNG: accuracy and F1 per method per noise; JT throughput and memory ratios."""
    plt = pyplot()
    by_noise = _by_noise(report["rows"])
    noises = list(by_noise)
    methods = [m for m in LABELS if any(m in v for v in by_noise.values())]
    others = [m for m in methods if m != JT]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    _bars(axes[0, 0], noises, methods, lambda n, m: by_noise[n].get(m, {}).get("test_accuracy"))
    axes[0, 0].set_title("test accuracy")
    _bars(
        axes[0, 1],
        noises,
        [m for m in methods if m != "ce"],
        lambda n, m: by_noise[n].get(m, {}).get("f1"),
    )
    axes[0, 1].set_title("wrong-label detection F1")
    ratios = {(x["noise"], x["other"]): x for x in report["ratios"]}
    _bars(axes[1, 0], noises, others, lambda n, m: ratios.get((n, m), {}).get("throughput"))
    axes[1, 0].set_title("JT throughput / other's (higher is better)")
    for y, style in ((1.8, "--"), (0.9, ":"), (1.0, "-")):
        axes[1, 0].axhline(y, color="gray", linestyle=style, linewidth=0.8)
    _bars(axes[1, 1], noises, others, lambda n, m: ratios.get((n, m), {}).get("memory"))
    axes[1, 1].set_title("JT peak memory / other's (lower is better)")
    for y, style in ((0.6, "--"), (1.0, "-")):
        axes[1, 1].axhline(y, color="gray", linestyle=style, linewidth=0.8)
    fig.suptitle(
        f"jumpray bench, {report['profile']} profile, {report['device']}, {report['date']}"
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _bars(ax, noises: list[str], series: list[str], value) -> None:
    width = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        ys = [value(n, name) for n in noises]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(noises))]
        ax.bar(xs, [y if y is not None else 0.0 for y in ys], width, label=LABELS[name])
    ax.set_xticks(range(len(noises)), noises)
    ax.legend(fontsize=8)

"""The clean report: PNG plots (drawn by :mod:`jumpray.plots`) and one self-contained
``report.html`` beside them.

The files are listed in docs/contract.md, 'Files written by score and clean'.

Plots (matplotlib, Agg backend, written next to the HTML, which links them by relative path):

- ``report_selection_curves.png``: the training run's per-epoch selected fraction, selection
  precision / recall and test accuracy (from the checkpoint's history);
- ``report_label_scores.png``: label-score histograms, split into truly clean and truly wrong
  labels when the shards carry clean labels, with the decision threshold (the ``threshold``
  decision; confident learning has one per class, listed in the HTML);
- ``report_noise_matrix.png``: the estimated noise matrix (confident learning's P(given | true
  class), or, for the ``threshold`` decision, P(given | predicted class) over confident samples),
  beside the true one when clean labels exist;
- ``report_gallery.png``: the most suspicious samples (lowest label score) with their given and
  predicted class names.

The HTML adds the summary numbers, the decision, per-class flag rates and the resolved config;
the summary's ``warnings`` (:mod:`jumpray.score.sanity`) come first, in a caution box.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jumpray.log import get_logger
from jumpray.plots import plot_gallery, plot_label_scores, plot_noise_matrix, plot_selection_curves

__all__ = [
    "write_report",
    "REPORT_FILE",
]

log = get_logger(__name__)

REPORT_FILE = "report.html"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


_HEADLINE = (
    ("num_samples", "samples scored"),
    ("num_label_issues", "label issues flagged"),
    ("num_quarantined", "samples quarantined (unusable)"),
    ("estimated_noise_rate", "estimated noise rate (flagged fraction)"),
    ("estimated_joint_noise_rate", "estimated noise rate (confident joint)"),
    ("true_noise_rate", "true noise rate"),
    ("precision", "detection precision"),
    ("recall", "detection recall"),
    ("f1", "detection F1"),
    ("predicted_label_accuracy_on_wrong", "predicted label = true label, on wrong labels"),
    ("test_accuracy", "test accuracy"),
    ("num_kept", "samples in the cleaned shards"),
    ("num_relabelled", "of which relabelled"),
    ("scoring_samples_per_s", "scoring throughput (samples/s)"),
)


def write_report(
    out_dir: str | Path,
    *,
    summary: dict[str, Any],
    histograms: dict[str, Any],
    history: Sequence[dict[str, float]],
    gallery_rows: Sequence[dict[str, Any]],
    gallery_images: Sequence[np.ndarray | None],
    config: dict[str, Any],
    title: str = "jumpray clean report",
) -> Path:
    """Write the PNGs and ``report.html`` into ``out_dir``; returns the HTML path.

    Args:
        out_dir: OUT.
        summary: the content of summary.json.
        histograms: :meth:`jumpray.score.summary.LabelStats.histograms`.
        history: the training run's per-epoch metrics.
        gallery_rows, gallery_images: the suspicious samples and their uint8 (C, H, W) images.
        config: the resolved run config (a dict).
        title: the page title.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(summary.get("class_names") or [])
    c = int(summary.get("num_classes") or len(summary["estimated_noise_matrix"]))
    decision = summary.get("decision", {})
    figures: list[tuple[str, Path | None]] = [
        (
            "Selection during training",
            plot_selection_curves(history, out / "report_selection_curves.png"),
        ),
        (
            "Label scores",
            plot_label_scores(
                histograms,
                out / "report_label_scores.png",
                threshold=(
                    None
                    if decision.get("name") == "confident"
                    else float(decision.get("threshold", 0.5))
                ),
            ),
        ),
        (
            "Noise matrix",
            plot_noise_matrix(
                summary["estimated_noise_matrix"],
                out / "report_noise_matrix.png",
                class_names=names,
                true=summary.get("true_noise_matrix"),
                method=str(summary.get("noise_matrix_method", "confident_samples")),
            ),
        ),
        (
            "Most suspicious samples",
            plot_gallery(
                gallery_rows,
                gallery_images,
                out / "report_gallery.png",
                class_names=names,
                num_classes=c,
            ),
        ),
    ]
    page = _html(title, summary, figures, names, config)
    path = out / REPORT_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    log.info("report: %s", path)
    return path


def _explain(decision: dict[str, Any], names: list[str]) -> str:
    """One paragraph on how the decision was made (and the per-class thresholds)."""
    epochs = html.escape(str(decision.get("snapshot_epochs")))
    if decision.get("name") != "confident":
        return (
            f"label_score = {html.escape(str(decision.get('combine')))} over the snapshots of "
            f"epochs {epochs} of the per-snapshot score "
            f"<code>{html.escape(str(decision.get('formula')))}</code>; a sample is a label issue "
            f"when label_score &lt; {decision.get('threshold')}."
        )
    thresholds = decision.get("class_thresholds") or []
    listed = ", ".join(
        f"{html.escape(names[i] if i < len(names) else str(i))}: "
        + ("-" if t is None else f"{t:.3f}")
        for i, t in enumerate(thresholds)
    )
    source = {
        "snapshots": f"the mean probabilities of the snapshots of epochs {epochs}",
        "training": "the running mean of the training forward's probabilities",
        "both": f"the average of the snapshots' (epochs {epochs}) and the training forward's "
        "probabilities",
    }.get(str(decision.get("source", "snapshots")), "")
    return (
        f"Confident learning (Northcutt et al., JAIR 2021) on {source}: per-class thresholds "
        "(the mean probability of each class "
        "over the samples given that label), the calibrated confident joint, and "
        f"<code>{html.escape(str(decision.get('filter_by')))}</code>; label_score and rank are "
        f"<code>{html.escape(str(decision.get('rank_by')))}</code>. Thresholds: {listed}."
    )


def _html(
    title: str,
    summary: dict[str, Any],
    figures: list[tuple[str, Path | None]],
    names: list[str],
    config: dict[str, Any],
) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{_fmt(summary[key])}</td></tr>"
        for key, label in _HEADLINE
        if summary.get(key) is not None
    )
    explain = _explain(summary.get("decision", {}), names)
    rates = summary.get("flag_rate_by_class") or []
    noise = summary.get("estimated_noise_rate_by_class")
    class_rows = "".join(
        f"<tr><td>{html.escape(names[i] if i < len(names) else str(i))}</td><td>{r:.3f}</td>"
        + (f"<td>{noise[i]:.3f}</td>" if noise else "")
        + "</tr>"
        for i, r in enumerate(rates)
    )
    class_head = "<th>class</th><th>flagged fraction</th>" + (
        "<th>estimated wrong fraction</th>" if noise else ""
    )
    figs = "".join(
        f'<h2>{html.escape(name)}</h2><img src="{p.name}" alt="{html.escape(name)}">'
        for name, p in figures
        if p is not None
    )
    files = "".join(
        f'<li><a href="{f}">{f}</a></li>'
        for f in ("labels.parquet", "summary.json", "quarantine.parquet")
    )
    cfg = html.escape(yaml.safe_dump(config, sort_keys=False))
    warnings = summary.get("warnings") or []
    caution = (
        '<div class="caution"><h2>Caution: the model behind these decisions looks weak</h2><ul>'
        + "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
        + "</ul><p>Check these numbers before using the flags or the cleaned shards.</p></div>"
        if warnings
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 10px; text-align: left; }}
th {{ background: #f4f4f4; font-weight: normal; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
pre {{ background: #f8f8f8; padding: 1em; font-size: 12px; overflow-x: auto; }}
.caution {{ border: 2px solid #c60; background: #fff4e8; padding: 0 1em; margin: 1em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{caution}
<p>Shards: <code>{html.escape(str(summary.get("shards", "")))}</code></p>
<table>{rows}</table>
<p>{explain}</p>
{figs}
<h2>Flag rate per given class</h2><table><tr>{class_head}</tr>{class_rows}</table>
<h2>Files</h2><ul>{files}</ul>
<h2>Configuration</h2><pre>{cfg}</pre>
</body></html>
"""

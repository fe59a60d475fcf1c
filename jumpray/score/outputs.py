"""Score a shard folder and write what ``jumpray score`` and ``jumpray clean`` publish.

:func:`score_and_report` scores every sample with a snapshot set, applies the decision, and
writes ``labels.parquet``, ``quarantine.parquet``, ``summary.json`` and ``report.html`` (with its
PNGs) into one folder (docs/contract.md, 'Files written by score and clean').
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jumpray.config import RunConfig
from jumpray.errors import DataError
from jumpray.files import write_json, write_parquet
from jumpray.log import get_logger
from jumpray.score.export import gallery_side, read_gallery_images
from jumpray.score.report import write_report
from jumpray.score.sanity import model_warnings
from jumpray.score.summary import LabelStats

__all__ = ["score_and_report", "SUMMARY_FILE", "LABELS_FILE", "QUARANTINE_FILE"]

log = get_logger(__name__)

SUMMARY_FILE = "summary.json"
LABELS_FILE = "labels.parquet"
QUARANTINE_FILE = "quarantine.parquet"


def score_and_report(
    cfg: RunConfig,
    *,
    source,
    snaps,
    out: Path,
    extra: dict[str, Any] | None = None,
    title: str = "jumpray score report",
) -> dict[str, Any]:
    """Score ``source`` with ``snaps``; write labels.parquet, quarantine.parquet, summary.json and
    report.html into ``out``; return the summary.

    Args:
        cfg: the run config.
        source: a :class:`jumpray.data.ShardSource`.
        snaps: a :class:`jumpray.score.pipeline.SnapshotSet`.
        out: OUT (created).
        extra: more summary fields (test accuracy, timings), merged before writing.
        title: the report's title.
    """
    from jumpray.score.pipeline import score_shards  # Ray: imported once Ray is up

    out.mkdir(parents=True, exist_ok=True)
    info = source.info
    num_classes = int(snaps.model_args["num_classes"])
    if info.num_classes > num_classes:
        raise DataError(
            f"{info.folder} has {info.num_classes} classes but the checkpoint's network has "
            f"{num_classes}",
            fix="score shards of the same label space as the training data",
        )
    stats = LabelStats(
        num_classes, gallery_size=cfg.clean.gallery_size, confident_prob=cfg.score.confident_prob
    )
    run = score_shards(source, snaps, cfg, labels_path=out / LABELS_FILE, stats=stats)
    num_quarantined = write_parquet(out / QUARANTINE_FILE, source.quarantine())
    label_stats = stats.result()
    summary: dict[str, Any] = {
        "shards": str(info.folder),
        "num_rows_in": info.rows_in,
        **label_stats,
        "num_quarantined": num_quarantined,
        "num_classes": num_classes,
        "class_names": info.class_names,
        "image_size": list(info.image_hw),
        "image_size_choice": info.image_size_choice,
        **_decision_summary(cfg, snaps, run.decision),
        "scoring_wall_s": round(run.wall_s, 3),
        "scoring_samples_per_s": round(run.samples_per_s, 1),
        "decision_wall_s": round(run.decide_s, 3),
        # The fixed part of scoring_wall_s: actor start, weight fetch, first block.
        "scoring_first_block_s": round(run.first_block_s, 3),
        "score_resources": {
            "num_actors": cfg.score.num_actors,
            "cpus_per_actor": cfg.score.cpus_per_actor,
            "gpus_per_actor": cfg.score.gpus_per_actor,
            "batch_size": cfg.score.batch_size,
        },
    }
    summary |= extra or {}
    summary["warnings"] = model_warnings(
        summary,
        stats.histograms(),
        num_classes=num_classes,
        threshold=cfg.score.threshold,
        # The confident predictions, before a confident-learning joint replaced the summary's.
        support=label_stats["noise_matrix_support"],
    )
    for warning in summary["warnings"]:
        log.warning("caution: %s", warning)
    write_json(out / SUMMARY_FILE, summary)
    t_report = time.perf_counter()
    rows = stats.gallery()
    side = gallery_side(min(info.image_hw))
    images = read_gallery_images(info.folder, rows, side=side) if rows else []
    write_report(
        out,
        summary=summary,
        histograms=stats.histograms(),
        history=snaps.history,
        gallery_rows=rows,
        gallery_images=images,
        config=cfg.model_dump(),
        title=title,
    )
    summary["report_s"] = round(time.perf_counter() - t_report, 3)
    write_json(out / SUMMARY_FILE, summary)
    return summary


# The rule's estimates that go to the top level of summary.json (the rest stays in "decision").
_TOP_LEVEL = (
    "estimated_noise_matrix",
    "estimated_noise_rate_by_class",
    "estimated_joint_noise_rate",
)


def _decision_summary(cfg: RunConfig, snaps, decision: dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``decision`` entry (name, parameters, snapshots, per-class thresholds) and
    the rule's estimates; a confident-learning noise matrix replaces the confident-sample one."""
    decision = dict(decision)
    top = {k: decision.pop(k) for k in _TOP_LEVEL if k in decision}
    if "estimated_noise_matrix" in top:
        top["noise_matrix_method"] = "confident_learning"
        # Rows = true class: the samples confidently of each class.
        top["noise_matrix_support"] = [
            sum(col) for col in zip(*decision["confident_joint"], strict=True)
        ]
    else:
        top["noise_matrix_method"] = "confident_samples"
    return top | {
        "decision": {
            **decision,
            "formula": cfg.score.formula,
            "combine": cfg.score.combine,
            "threshold": cfg.score.threshold,
            "top_k": cfg.score.top_k,
            "num_snapshots": len(snaps.epochs),
            "snapshot_epochs": snaps.epochs,
            "confident_prob": cfg.score.confident_prob,
        }
    }

"""Measure the label-score decisions of ``jumpray.score.decide`` on Fashion-MNIST (CPU).

For each noise SPEC (default ``sym:0.4`` and ``pairflip:0.45``) this

1. writes the first ``--limit`` Fashion-MNIST training samples with that noise (seed 0) and the
   test split as shards (once, under ``--work``);
2. runs the clean job (:func:`jumpray.jobs.clean.run_clean`) with the demo's settings
   (``configs/fashion_mnist.yaml``), which trains and keeps the last R snapshots in its checkpoint;
3. scores every training sample with those R snapshots in this process (the same
   :class:`~jumpray.score.scorer.Scorer` the actor pool runs) and evaluates every combination of
   score formula x combiner x number of snapshots x threshold: precision, recall and F1 of
   ``is_label_issue`` against ``given != clean``.

Output: ``--out`` JSON with every row, and a table on stdout (the best rows per noise and the rows
of each formula at threshold 0.5). One run::

    python benchmarks/score_decisions.py --work /tmp/jr-decide --out score-decisions.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jumpray.checkpoint import load_checkpoint  # noqa: E402
from jumpray.config import load_config  # noqa: E402
from jumpray.core import detection_metrics  # noqa: E402
from jumpray.data import iter_plain, write_fashion_mnist  # noqa: E402
from jumpray.score.decide import COMBINERS, SCORE_FORMULAS, label_score  # noqa: E402
from jumpray.score.scorer import Scorer, ScorerSpec  # noqa: E402

THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)


def prepare(work: Path, noise: str, limit: int) -> tuple[Path, Path]:
    train = work / f"train-{noise.replace(':', '')}-{limit}"
    test = work / "test"
    if not train.exists():
        write_fashion_mnist(train, split="train", limit=limit, noise=noise, seed=0)
    if not test.exists():
        write_fashion_mnist(test, split="test")
    return train, test


def raw_scores(checkpoint: Path, shards: Path, cfg) -> tuple[dict[str, np.ndarray], dict]:
    """Per-snapshot raw scores (R, N) of every sample, plus given/clean labels."""
    state = load_checkpoint(checkpoint)
    data = state["data"]
    sel = cfg.selection
    spec = ScorerSpec(
        model_args=state["model_args"],
        image_size=int(data["image_hw"][0]),
        channels=int(data["channels"]),
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        temperature=sel.temperature,
        rule=sel.rule,
        tau=sel.tau,
        max_mean_bit_loss=sel.max_mean_bit_loss,
        code_clamp=sel.code_clamp,
    )
    scorer = Scorer([w for _, w in state["snapshots"]], spec, device="cpu")
    parts: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {"given": [], "clean": [], "probs": []}
    for batch in iter_plain(shards, batch_size=1024):
        s = scorer.score_snapshots(batch["image"], batch["given_label"])
        for k, v in s.per_snapshot.items():
            parts.setdefault(k, []).append(v)
        labels["given"].append(batch["given_label"])
        labels["clean"].append(batch["clean_label"])
        labels["probs"].append(s.probs)
    ps = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
    return ps, {
        "given": np.concatenate(labels["given"]),
        "clean": np.concatenate(labels["clean"]),
        "probs": np.concatenate(labels["probs"], axis=1),
        "epochs": [int(e) for e, _ in state["snapshots"]],
    }


def evaluate(ps: dict[str, np.ndarray], lab: dict, noise: str) -> list[dict]:
    rows = []
    r_total = ps["prob_given"].shape[0]
    for formula, combine, r in itertools.product(SCORE_FORMULAS, COMBINERS, range(1, r_total + 1)):
        sub = {k: v[-r:] for k, v in ps.items()}
        score = label_score(sub, formula=formula, combine=combine)
        for t in THRESHOLDS:
            m = detection_metrics(score < t, lab["given"], lab["clean"])
            rows.append(
                {
                    "noise": noise,
                    "formula": formula,
                    "combine": combine,
                    "num_snapshots": r,
                    "threshold": t,
                    "precision": round(m["precision"], 4),
                    "recall": round(m["recall"], 4),
                    "f1": round(m["f1"], 4),
                    "flagged_fraction": round(m["flagged_fraction"], 4),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/jr-decide"))
    parser.add_argument("--out", type=Path, default=Path("score-decisions.json"))
    parser.add_argument("--noise", nargs="+", default=["sym:0.4", "pairflip:0.45"])
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--keep", type=int, default=3, help="snapshots kept (R)")
    parser.add_argument(
        "--reuse", action="store_true", help="re-score existing clean runs under --work"
    )
    parser.add_argument("overrides", nargs="*", help="more config overrides")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from jumpray.jobs.clean import run_clean
    from jumpray.log import setup_logging

    setup_logging()
    args.work.mkdir(parents=True, exist_ok=True)
    rows, runs = [], []
    for noise in args.noise:
        train, test = prepare(args.work, noise, args.limit)
        cfg = load_config(
            REPO / "configs" / "fashion_mnist.yaml",
            [
                f"train.epochs={args.epochs}",
                f"snapshots.keep={args.keep}",
                f"score.num_snapshots={args.keep}",
                "tracking.enabled=false",
                *args.overrides,
            ],
        )
        out = args.work / f"clean-{noise.replace(':', '')}"
        t0 = time.perf_counter()
        if args.reuse and (out / "summary.json").is_file():
            summary = json.loads((out / "summary.json").read_text())
        else:
            summary = run_clean(cfg, shards=train, out=out, test_shards=test)
        wall = time.perf_counter() - t0
        ps, lab = raw_scores(out / "checkpoint", train, cfg)
        rows += evaluate(ps, lab, noise)
        runs.append(
            {
                "noise": noise,
                "realized_noise_rate": float((lab["given"] != lab["clean"]).mean()),
                "test_accuracy": summary.get("test_accuracy"),
                "snapshot_epochs": lab["epochs"],
                "clean_job_f1": summary.get("f1"),
                "clean_job_wall_s": summary.get("total_wall_s", round(wall, 1)),
            }
        )
    args.out.write_text(json.dumps({"runs": runs, "rows": rows}, indent=1))
    print(json.dumps(runs, indent=1))
    print(
        f"{'noise':<14}{'formula':<10}{'combine':<8}{'R':>3}{'thr':>6}{'prec':>8}{'rec':>8}{'F1':>8}"
    )
    for noise in args.noise:
        mine = [r for r in rows if r["noise"] == noise]
        best = sorted(mine, key=lambda r: -r["f1"])[:8]
        at_half = [r for r in mine if r["threshold"] == 0.5 and r["num_snapshots"] == args.keep]
        for r in best + at_half:
            print(
                f"{r['noise']:<14}{r['formula']:<10}{r['combine']:<8}{r['num_snapshots']:>3}"
                f"{r['threshold']:>6.2f}{r['precision']:>8.3f}{r['recall']:>8.3f}{r['f1']:>8.3f}"
            )
    # Mean F1 over the noise types, per decision: the default is the best of these.
    key = ("formula", "combine", "num_snapshots", "threshold")
    table: dict[tuple, list[float]] = {}
    for r in rows:
        table.setdefault(tuple(r[k] for k in key), []).append(r["f1"])
    ranked = sorted(table.items(), key=lambda kv: -np.mean(kv[1]))
    print("\nbest mean F1 over the noise types:")
    for k, f1s in ranked[:10]:
        print(f"  {k}: mean {np.mean(f1s):.4f} ({', '.join(f'{f:.3f}' for f in f1s)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which probabilities should the decision read: the snapshots', the training history's, or both?

For each noise SPEC (default ``sym:0.4`` and ``asym:0.4``) this

1. writes the first ``--limit`` Fashion-MNIST training samples with that noise (seed 0) and the
   test split as shards (once, under ``--work``);
2. runs the clean job (:func:`jumpray.jobs.clean.run_clean`) with the schema defaults (no profile),
   ``train.epochs=--epochs`` and ``score.decision=confident``: one Jump-teaching training, whose
   checkpoint holds the last R snapshots and the per-sample training history;
3. in this process, scores every training sample with those snapshots (the same
   :class:`~jumpray.score.scorer.Scorer` the actor pool runs; mean of softmax(logits / T)), reads
   the training history's running probabilities and clean-flag rate, and evaluates precision,
   recall and F1 of ``is_label_issue`` against ``given != clean`` for: the ``threshold`` decision
   (p(given) < 0.1, snapshots), confident learning with each filter on each source
   (``snapshots``, ``training``, ``both`` = the average), and the clean-flag rate < 0.5.

C = 10 <= ``score.top_k``, so the array-level :func:`jumpray.score.confident.find_label_issues`
on full probabilities is exactly what the product path decides (the unit and integration tests
check that equality). Output: ``--out`` JSON and a table on stdout. One run::

    python benchmarks/score_sources.py --work /tmp/jr-sources --out score-sources.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jumpray.checkpoint import load_checkpoint  # noqa: E402
from jumpray.config import load_config  # noqa: E402
from jumpray.core import SampleHistory, detection_metrics  # noqa: E402
from jumpray.data import iter_plain, write_fashion_mnist  # noqa: E402
from jumpray.score.confident import FILTERS, find_label_issues  # noqa: E402
from jumpray.score.scorer import Scorer, ScorerSpec  # noqa: E402


def prepare(work: Path, noise: str, limit: int) -> tuple[Path, Path]:
    train = work / f"train-{noise.replace(':', '')}-{limit}"
    test = work / "test"
    if not train.exists():
        write_fashion_mnist(train, split="train", limit=limit, noise=noise, seed=0)
    if not test.exists():
        write_fashion_mnist(test, split="test")
    return train, test


def probabilities(checkpoint: Path, shards: Path, cfg) -> dict[str, np.ndarray]:
    """Snapshot-mean and training-history probabilities (N, C) of every sample, by idx order."""
    state = load_checkpoint(checkpoint)
    data, sel = state["data"], cfg.selection
    spec = ScorerSpec(
        model_args=state["model_args"],
        image_size=int(data["image_hw"][0]),
        channels=int(data["channels"]),
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        temperature=sel.temperature,
        rule=sel.rule,
        tau=sel.tau,
    )
    snaps = state["snapshots"][-cfg.score.num_snapshots :]
    scorer = Scorer([w for _, w in snaps], spec, device="cpu")
    idx, given, clean, probs = [], [], [], []
    for batch in iter_plain(shards, batch_size=1024):
        s = scorer.score_snapshots(batch["image"], batch["given_label"])
        probs.append(s.probs.astype(np.float64).mean(axis=0))
        idx.append(batch["idx"])
        given.append(batch["given_label"])
        clean.append(batch["clean_label"])
    idx = np.concatenate(idx)
    saved = state["method"]["history"]
    history = SampleHistory(saved["top_labels"].shape[0], int(saved["num_classes"]), top_k=10)
    history.load_state_dict(saved)
    h = history.lookup(torch.from_numpy(idx))
    c = int(state["model_args"]["num_classes"])
    train_probs = torch.zeros(len(idx), c).scatter(1, h["top_labels"], h["top_probs"])
    return {
        "given": np.concatenate(given),
        "clean": np.concatenate(clean),
        "snapshots": np.concatenate(probs),
        "training": train_probs.double().numpy(),
        "clean_rate": h["clean_rate"].double().numpy(),
        "epochs": np.asarray([int(e) for e, _ in snaps]),
    }


def evaluate(p: dict[str, np.ndarray], noise: str) -> list[dict]:
    given, clean = p["given"], p["clean"]
    sources = {
        "snapshots": p["snapshots"],
        "training": p["training"],
        "both": 0.5 * (p["snapshots"] + p["training"]),
    }
    n = len(given)
    decisions = {("threshold 0.1", "snapshots"): p["snapshots"][np.arange(n), given] < 0.1}
    decisions[("clean-flag rate < 0.5", "training")] = p["clean_rate"] < 0.5
    for name, probs in sources.items():
        for filter_by in FILTERS:
            decisions[(f"confident {filter_by}", name)] = find_label_issues(
                given, probs, filter_by=filter_by
            )
    rows = []
    for (decision, source), flagged in decisions.items():
        m = detection_metrics(flagged, given, clean)
        rows.append(
            {
                "noise": noise,
                "decision": decision,
                "source": source,
                "precision": round(m["precision"], 4),
                "recall": round(m["recall"], 4),
                "f1": round(m["f1"], 4),
                "flagged_fraction": round(m["flagged_fraction"], 4),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/jr-sources"))
    parser.add_argument("--out", type=Path, default=Path("score-sources.json"))
    parser.add_argument("--noise", nargs="+", default=["sym:0.4", "asym:0.4"])
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--config", type=Path, default=None, help="a profile (default: none)")
    parser.add_argument("--reuse", action="store_true", help="re-evaluate existing runs")
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
            args.config,
            [
                f"train.epochs={args.epochs}",
                "score.decision=confident",
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
        p = probabilities(out / "checkpoint", train, cfg)
        rows += evaluate(p, noise)
        runs.append(
            {
                "noise": noise,
                "realized_noise_rate": float((p["given"] != p["clean"]).mean()),
                "test_accuracy": summary.get("test_accuracy"),
                "snapshot_epochs": p["epochs"].tolist(),
                "clean_job_f1": summary.get("f1"),
                "clean_job_wall_s": summary.get("total_wall_s", round(wall, 1)),
                "loadavg": os.getloadavg()[0],
            }
        )
    args.out.write_text(json.dumps({"runs": runs, "rows": rows}, indent=1))
    print(json.dumps(runs, indent=1))
    print(f"{'noise':<10}{'decision':<36}{'source':<11}{'prec':>7}{'rec':>7}{'F1':>7}{'flag':>7}")
    for r in rows:
        print(
            f"{r['noise']:<10}{r['decision']:<36}{r['source']:<11}{r['precision']:>7.3f}"
            f"{r['recall']:>7.3f}{r['f1']:>7.3f}{r['flagged_fraction']:>7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

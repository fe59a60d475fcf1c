"""A Ray job entrypoint for tests/integration/test_cluster_submit.py: a Train worker SIGKILLed
mid-epoch on a 2-node cluster (one worker per node), then the checks of a correct resume.

    python tests/integration/_drill_worker_kill.py SHARDS MARKER

Prints one ``DRILL {json}`` line (what the test asserts on) and exits 0 when every check holds.
The resume must take flags, snapshots and RNG from the checkpoint: every sample is seen exactly
once per epoch, both ranks hold the same flags, and each sample's flag state was visited once per
epoch across the kill.
"""

from __future__ import annotations

import json
import sys
import tempfile


def main(shards: str, marker: str) -> int:
    from ray.util.state import list_actors

    from jumpray.checkpoint import load_checkpoint
    from jumpray.config import load_config
    from jumpray.data.shards import read_shards
    from jumpray.ray_utils import init_ray
    from jumpray.train.launch import fit

    init_ray()  # the cluster the job was submitted to (RAY_ADDRESS)
    epochs = 3
    cfg = load_config(
        None,
        {
            "train": {"epochs": epochs, "batch_size": 32},
            "jump": {"warmup_epochs": 1},
            "model": {"semantic_dim": 16},
            "scaling": {
                "num_workers": 2,
                "cpus_per_worker": 0.5,
                "max_failures": 1,
                "placement_strategy": "STRICT_SPREAD",
            },
            "tracking": {"enabled": False},
        },
    )
    source = read_shards(shards)
    n = source.info.num_samples
    with tempfile.TemporaryDirectory() as out:
        result = fit(
            cfg,
            train=source,
            out_dir=out,
            fault_injection={"rank": 1, "epoch": 1, "batch": 2, "marker": marker},
        )
        state = load_checkpoint(result.checkpoint_dir)
        result.release()
    workers = [a for a in list_actors(limit=1000) if "TrainWorker" in (a.class_name or "")]
    history = result.history
    facts = {
        "epochs": [int(m["epoch"]) for m in history],
        "attempt_start_epoch": [int(m["attempt_start_epoch"]) for m in history],
        "every_sample_once": all(
            (m["num_unique_seen"], m["num_seen_multiple"], m["num_unseen"]) == (n, 0, 0)
            for m in history
        ),
        "flags_same_on_all_ranks": all(m["flags_same_on_all_ranks"] == 1.0 for m in history),
        "visits_per_sample": sorted(set(state["method"]["flags"]["visits"].tolist())),
        "snapshot_epochs": list(state["snapshot_epochs"]),
        "worker_nodes": len({w.node_id for w in workers}),
        "num_samples": n,
    }
    print("DRILL " + json.dumps(facts), flush=True)
    ok = (
        facts["epochs"] == list(range(epochs))
        and facts["attempt_start_epoch"][0] == 0
        and max(facts["attempt_start_epoch"]) >= 1  # a second attempt started after the kill
        and facts["every_sample_once"]
        and facts["flags_same_on_all_ranks"]
        and facts["visits_per_sample"] == [epochs]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

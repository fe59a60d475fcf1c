"""A Ray Tune sweep of J, K, tau and lr, each trial a Ray Train run: the same command as
``jumpray tune`` (docs/contract.md).

Examples::

    python pipelines/tune.py --shards shards/fm-train --test-shards shards/fm-test --out runs/tune \\
        --config configs/tune.yaml
    ray job submit --working-dir . -- python pipelines/tune.py --shards /data/c1m --out runs/tune \\
        --config configs/clothing1m.yaml tune.num_samples=32 scaling.use_gpu=true
    python pipelines/tune.py --shards shards/fm-train --test-shards shards/fm-test --out runs/tune --resume
"""

import sys

from jumpray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))

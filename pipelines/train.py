"""Train on shards with Ray Train: the same command as ``jumpray train`` (docs/contract.md).

Examples::

    python pipelines/train.py --shards shards/fm-train --test-shards shards/fm-test --out runs/jt \\
        train.epochs=10 scaling.num_workers=2
    ray job submit --working-dir . -- python pipelines/train.py --shards /data/c1m --out runs/c1m \\
        scaling.num_workers=4 scaling.use_gpu=true
"""

import sys

from jumpray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

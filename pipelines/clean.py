"""Train + score + decide + write: ``jumpray clean`` (docs/contract.md).

Examples::

    python pipelines/clean.py --shards shards/fm-train --test-shards shards/fm-test --out runs/clean \\
        --config configs/fashion_mnist.yaml --write-shards
    ray job submit --working-dir . -- python pipelines/clean.py --shards /data/c1m --out runs/c1m \\
        --write-shards scaling.num_workers=4 scaling.use_gpu=true score.gpus_per_actor=1
"""

import sys

from jumpray.cli import main

if __name__ == "__main__":
    sys.exit(main(["clean", *sys.argv[1:]]))

"""Score every sample of a shard folder with a trained checkpoint: ``jumpray score`` (docs/contract.md).

Examples::

    python pipelines/score.py --shards shards/fm-train --checkpoint runs/jt/checkpoint --out runs/s
    ray job submit --working-dir . -- python pipelines/score.py --shards /data/c1m \\
        --checkpoint runs/c1m/checkpoint --out runs/c1m-score score.num_actors=4 score.gpus_per_actor=1
"""

import sys

from jumpray.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))

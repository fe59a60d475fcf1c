"""Convert a dataset to WebDataset shards: the same command as ``jumpray shards`` (docs/contract.md).

Examples::

    python pipelines/shards.py fashion-mnist --out shards/fm-train --noise sym:0.4 --seed 1
    python pipelines/shards.py from-list LIST --root DIR --out DIR [--clean-list FILE] [--key-list FILE]
    python pipelines/shards.py from-folder DIR --out DIR data.on_error=skip
"""

import sys

from jumpray.cli import main

if __name__ == "__main__":
    sys.exit(main(["shards", *sys.argv[1:]]))

"""The whole clean job on Fashion-MNIST with injected noise, locally: ``jumpray demo`` (docs/contract.md).

Examples::

    python pipelines/demo.py                       # ./demo-out, 10,000 samples, sym:0.4
    python pipelines/demo.py --out /tmp/demo --noise pairflip:0.45 train.epochs=12
"""

import sys

from jumpray.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))

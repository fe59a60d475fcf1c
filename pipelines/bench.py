"""Jump-teaching against CE, Co-teaching, JoCoR and cleanlab: the same command as ``jumpray bench``.

Examples::

    python pipelines/bench.py --profile quick --out bench-out
    python pipelines/bench.py --profile full --out bench-full --device cuda
"""

import sys

from jumpray.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

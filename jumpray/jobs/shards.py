"""``jumpray shards``: convert a dataset to WebDataset shards (docs/contract.md).

Examples::

    jumpray shards fashion-mnist --out shards/fm-train --noise sym:0.4 --seed 1
    jumpray shards fashion-mnist --out shards/fm-test --split test
    # Clothing1M (docs/contract.md): the noisy train set, in key-list order, with the clean labels
    jumpray shards from-list C1M/label/noisy_label_kv.txt --root C1M --out shards/c1m-train \\
        --key-list C1M/label/noisy_train_key_list.txt --clean-list C1M/label/clean_label_kv.txt \\
        --num-classes 14
    jumpray shards from-list C1M/label/clean_label_kv.txt --root C1M --out shards/c1m-test \\
        --key-list C1M/label/clean_test_key_list.txt --clean-list C1M/label/clean_label_kv.txt \\
        --num-classes 14 --prefix test
    # WebVision "mini": Google images of the first 50 classes
    jumpray shards from-list WV/info/train_filelist_google.txt --root WV --out shards/wv \\
        --max-label 49
    jumpray shards from-folder photos/ --out shards/photos data.on_error=skip
    # a million-line list in 4 Ray tasks (local Ray, or the cluster of RAY_ADDRESS)
    jumpray shards from-list big.txt --root imgs --out shards/big --parallel 4

Bad input exits 2 with one paragraph naming the file (and line, for list files). Progress (done,
rate, ETA) goes to stderr every 10 s. ``--parallel N`` starts Ray (the run preamble,
:func:`jumpray.jobs._run.start_ray`) and writes N contiguous ranges in N tasks: same samples,
idx and keys as a serial run; each range starts a new shard (docs/contract.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jumpray.cli import add_config_arguments, add_overwrite_argument
from jumpray.config import load_config
from jumpray.errors import ConfigError
from jumpray.log import echo
from jumpray.storage import location

__all__ = ["add_arguments", "run"]

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse turns the error into one usage line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _size(text: str) -> int:
    """Parse ``512M``, ``2G``, ``65536`` (bytes) into an int."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1:] if t[-1:] in _SIZE_UNITS else ""
    try:
        value = int(float(t[: len(t) - len(unit)]) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 2G, 65536)") from None
    if value < 1024:
        raise argparse.ArgumentTypeError(f"must be at least 1K, got {text!r}")
    return value


class _IntermixedParser(argparse.ArgumentParser):
    """Lets the trailing ``key=value`` overrides follow options that follow LIST/DIR.

    Plain argparse assigns every positional at the first run of positional words, so in
    ``from-list LIST --root R data.on_error=skip`` the override would be rejected.
    """

    _intermixed = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixed:
            return super().parse_known_args(args, namespace)
        self._intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed = False


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=location, required=True, help="the shard folder to create")
    p.add_argument(
        "--noise", default=None, help="sym:0.4, pairflip:0.45, asym:0.4, instance:0.4 or none"
    )
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: the config's seed)")
    p.add_argument("--prefix", default=None, help="shard name prefix (default train, or the split)")
    p.add_argument("--max-samples-per-shard", type=_positive_int, default=5000, metavar="N")
    p.add_argument(
        "--max-shard-bytes",
        type=_size,
        default=512 * 1024**2,
        metavar="SIZE",
        help="e.g. 512M (default), 1G",
    )
    add_overwrite_argument(p)
    add_config_arguments(p)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fashion-mnist``, ``from-list`` and ``from-folder`` sub-commands."""
    sub = parser.add_subparsers(
        dest="source", metavar="SOURCE", required=True, parser_class=_IntermixedParser
    )
    fm = sub.add_parser(
        "fashion-mnist", help="Fashion-MNIST idx files (Debian package, cache, or download)"
    )
    fm.add_argument("--split", choices=("train", "test"), default="train")
    fm.add_argument(
        "--limit", type=_positive_int, default=None, help="keep the first N samples, in file order"
    )
    fm.add_argument(
        "--root", type=Path, default=None, help="folder with the idx files (default: found)"
    )
    _common(fm)
    fl = sub.add_parser("from-list", help="'relative/path.jpg label' lists (Clothing1M, WebVision)")
    fl.add_argument("list", type=Path, metavar="LIST")
    fl.add_argument("--root", type=Path, required=True, help="the folder the paths are relative to")
    fl.add_argument("--clean-list", type=Path, default=None, help="'path clean_label' lines")
    fl.add_argument(
        "--key-list",
        type=Path,
        default=None,
        help="only these paths, in this order (Clothing1M *_key_list.txt)",
    )
    fl.add_argument(
        "--max-label",
        type=int,
        default=None,
        help="drop lines with a higher label (WebVision mini: 49)",
    )
    fl.add_argument("--num-classes", type=int, default=None)
    fl.add_argument(
        "--class-names", type=Path, default=None, help="a file with one class name per line"
    )
    _parallel(fl)
    _common(fl)
    ff = sub.add_parser("from-folder", help="one sub-folder per class")
    ff.add_argument("folder", type=Path, metavar="DIR")
    _parallel(ff)
    _common(ff)


def _parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--parallel",
        type=_positive_int,
        default=1,
        metavar="N",
        help="write N contiguous ranges in N Ray tasks (default 1: no Ray)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the shards and print a one-screen summary; returns 0."""
    from jumpray.data import convert

    cfg = load_config(args.config, args.overrides)
    seed = cfg.seed if args.seed is None else args.seed
    options = {
        "max_samples_per_shard": args.max_samples_per_shard,
        "max_shard_bytes": args.max_shard_bytes,
        "overwrite": args.overwrite,
        "on_error": cfg.data.on_error,
        "max_quarantine_fraction": cfg.data.max_quarantine_fraction,
    }
    if args.prefix:
        options["prefix"] = args.prefix
    parallel = getattr(args, "parallel", 1)
    if parallel > 1:
        from jumpray.jobs._run import start_ray

        start_ray(cfg.scaling.address)
        options["parallel"] = parallel
    t0 = time.perf_counter()
    if args.source == "fashion-mnist":
        index = convert.write_fashion_mnist(
            args.out,
            split=args.split,
            limit=args.limit,
            noise=args.noise,
            seed=seed,
            root=args.root,
            **options,
        )
    elif args.source == "from-list":
        names = None
        if args.class_names is not None:
            if not args.class_names.is_file():
                raise ConfigError(f"--class-names {args.class_names}: no such file")
            names = [n.strip() for n in args.class_names.read_text().splitlines() if n.strip()]
        index = convert.write_from_list(
            args.list,
            root=args.root,
            out=args.out,
            clean_list=args.clean_list,
            key_list=args.key_list,
            max_label=args.max_label,
            num_classes=args.num_classes,
            class_names=names,
            noise=args.noise,
            seed=seed,
            **options,
        )
    else:
        index = convert.write_from_folder(
            args.folder, out=args.out, noise=args.noise, seed=seed, **options
        )
    elapsed = time.perf_counter() - t0
    echo(f"\njumpray shards {args.source}: {args.out}")
    echo(f"  samples      {index.num_samples} in {len(index.shards)} shards ({elapsed:.1f} s)")
    names = ", ".join(index.class_names[:6]) + (", ..." if len(index.class_names) > 6 else "")
    echo(f"  classes      {index.num_classes}" + (f" ({names})" if names else ""))
    size = (
        "x".join(map(str, index.image_size))
        if index.image_size
        else "mixed sizes (training resizes them to one size, chosen from the data unless "
        "data.image_size is set)"
    )
    echo(
        f"  images       {index.channels or 'mixed'} channel(s), {size}; "
        f"mean {index.mean} std {index.std}"
    )
    echo(f"  clean labels {index.extra.get('num_clean_labels', 0)}")
    if index.noise:
        echo(
            f"  noise        {index.noise['spec']} seed {index.noise['seed']}: "
            f"realized wrong-label rate {index.noise['realized_rate']:.4f}"
        )
    echo(f"  quarantined  {index.extra.get('num_quarantined', 0)} (see quarantine.parquet)")
    return 0

"""JPEG samples per second per core: the Ray Data pipeline against a plain DataLoader on webdataset.

Makes a Clothing1M-shaped dataset in a temporary folder (RGB JPEGs of 200-320 px sides at quality
90, smooth colour fields plus sensor-like noise, so the files weigh what web photos of that size
weigh; a ``relpath label`` list file and an image folder), converts it with the project's
``from-list`` converter, and measures in one run, on the same shards, cores and batch size:

(a) ``ray``: ``read_shards`` at ``data.image_size=224`` (metadata scan + Ray Data read tasks that
    decode and resize), iterated to the end in the driver as uint8 torch batches, each turned
    into the weak view of ``configs/clothing1m.yaml``'s ``large`` recipe (reflect-pad 28, random
    224 crop, flip) and normalised there, as the Ray Train worker does; Ray started with
    ``--cores`` CPUs; ``ray_map_batches``: the same views made by ``map_batches`` tasks instead;
(b) ``loader``: ``torch.utils.data.DataLoader`` with ``--cores`` workers over
    ``webdataset.WebDataset`` (shards split between the workers), PIL decode and the same
    transforms written with torchvision (Resize(224), CenterCrop(224), RandomCrop(224, padding 28,
    reflect), RandomHorizontalFlip, ToTensor, Normalize);
(c) ``loader_rrc``: the same DataLoader with the usual ImageNet recipe instead
    (RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, Normalize).

Before that, one process and one thread time each JPEG decoder on the shard bytes, to 224 x 224
uint8: PIL full decode + PIL resize, PIL ``draft`` + PIL resize (jumpray's decoder before this
benchmark), ``torchvision.io.decode_jpeg`` + torchvision's uint8 resize, and jumpray's
``decode_image`` (the choice); on the dataset's images and on 600-900 px ones, where ``draft``
decodes at a reduced scale. With CUDA, ``decode_jpeg_batch(device="cuda")`` is timed too.

Ray start-up is excluded; one untimed pass of each pipeline warms caches and workers. Repeats
are interleaved (a, b, c, a, b, c, ...) so drifting machine load hits all alike; the report gives
the median and the min-max of each and the ratios of the medians.

    flock /tmp/jumpray-ray.lock python benchmarks/jpeg_pipeline.py --images 3000 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

NUM_CLASSES = 14
CROP = 224
PAD = CROP // 8  # the large recipe's reflect padding
MEAN = [0.6959, 0.6537, 0.6371]  # configs/clothing1m.yaml
STD = [0.3113, 0.3192, 0.3214]


def make_jpeg(rng: np.random.Generator, *, low: int, high: int) -> bytes:
    """One RGB JPEG (quality 90) of sides drawn from [low, high]: a smooth colour field + noise."""
    from PIL import Image

    w, h = (int(v) for v in rng.integers(low, high + 1, 2))
    cells = rng.integers(0, 256, (int(rng.integers(3, 10)), int(rng.integers(3, 10)), 3))
    field = Image.fromarray(cells.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    noisy = np.asarray(field, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_dataset(root: Path, num_images: int, seed: int = 0) -> Path:
    """Clothing1M's layout: ``images/<c>/<i>.jpg`` and ``label/train_list.txt``; returns the list."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(num_images):
        label = int(rng.integers(NUM_CLASSES))
        rel = f"images/{i % 100:02d}/{i:06d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(make_jpeg(rng, low=200, high=320))
        lines.append(f"{rel} {label}\n")
    (root / "label").mkdir()
    (root / "label" / "train_list.txt").write_text("".join(lines))
    return root / "label" / "train_list.txt"


# -- decoders (one image, to uint8 224 x 224) -------------------------------------------------


def _pil_to_224(data: bytes, *, draft: bool) -> np.ndarray:
    """The decoder jumpray had before this benchmark (with ``draft``), or without the draft."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    if draft:
        im.draft("RGB", (CROP, CROP))
    im = im.convert("RGB")
    w, h = im.size
    scale = CROP / min(w, h)
    new_w, new_h = max(CROP, round(w * scale)), max(CROP, round(h * scale))
    im = im.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (new_w - CROP) // 2, (new_h - CROP) // 2
    return np.ascontiguousarray(
        np.asarray(im.crop((left, top, left + CROP, top + CROP))).transpose(2, 0, 1)
    )


def _torchvision_to_224(data: bytes) -> np.ndarray:
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2.functional import center_crop, resize

    x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    h, w = x.shape[-2:]
    scale = CROP / min(h, w)
    x = resize(x, [max(CROP, round(h * scale)), max(CROP, round(w * scale))], antialias=True)
    return np.ascontiguousarray(center_crop(x, [CROP, CROP]).numpy())


def decoder_table(sets: dict[str, list[bytes]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """{set: {decoder: [ms per image, one per repeat]}}, one thread, repeats interleaved."""
    from jumpray.data.decode import decode_image, decode_jpeg_batch

    decoders: dict[str, Callable[[list[bytes]], object]] = {
        "pil": lambda ds: [_pil_to_224(d, draft=False) for d in ds],
        "pil_draft": lambda ds: [_pil_to_224(d, draft=True) for d in ds],
        "torchvision": lambda ds: [_torchvision_to_224(d) for d in ds],
        "jumpray": lambda ds: [decode_image(d, channels=3, image_size=CROP) for d in ds],
    }
    if torch.cuda.is_available():

        def on_gpu(ds: list[bytes]) -> None:
            for start in range(0, len(ds), 64):
                decode_jpeg_batch(ds[start : start + 64], image_size=CROP, device="cuda")
            torch.cuda.synchronize()

        decoders["cuda_batch64"] = on_gpu
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as in a Ray read task
    out: dict[str, dict[str, list[float]]] = {name: {k: [] for k in decoders} for name in sets}
    try:
        for name, datas in sets.items():
            for fn in decoders.values():
                fn(datas[:8])  # warm-up: imports, CUDA context
            for _ in range(repeats):
                for key, fn in decoders.items():
                    t0 = time.perf_counter()
                    fn(datas)
                    out[name][key].append(1e3 * (time.perf_counter() - t0) / len(datas))
    finally:
        torch.set_num_threads(threads)
    return out


# -- pipelines --------------------------------------------------------------------------------


def _ray_pass(
    folder: Path, params: dict, batch_size: int, epoch: int, *, where: str
) -> tuple[int, float, float]:
    """(rows, seconds, of which the scan) for one full pass of the Ray Data pipeline.

    ``where="consumer"`` augments in the process that iterates, from uint8 batches, as the Ray
    Train worker does (jumpray/train/rows.py, jumpray/train/epoch.py); ``where="map_batches"``
    augments in Ray Data tasks and ships float32 views.
    """
    from jumpray.data.augment import augment_batch, make_augmenter
    from jumpray.data.shards import read_shards
    from jumpray.train.rows import TRAIN_COLUMNS

    t0 = time.perf_counter()
    source = read_shards(folder, on_error="raise", image_size=CROP, channels=3)
    scan_s = time.perf_counter() - t0
    rows = 0
    if where == "consumer":
        augmenter = make_augmenter(**params)
        generator = torch.Generator().manual_seed(epoch)
        ds = source.dataset.select_columns(TRAIN_COLUMNS)  # as jumpray/train/launch.py
        for batch in ds.iter_torch_batches(batch_size=batch_size, device="cpu"):
            rows += len(augmenter.weak(batch["image"], generator))
        return rows, time.perf_counter() - t0, scan_s
    ds = source.dataset.map_batches(
        augment_batch,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={"augmenter": params, "seed": 0, "epoch": epoch, "views": "weak"},
    )
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        rows += len(batch["idx"])
    return rows, time.perf_counter() - t0, scan_s


class _Sample:
    """webdataset sample dict -> (normalised float32 (3, 224, 224), label); picklable for workers."""

    def __init__(self, recipe: str):
        from torchvision import transforms as T

        if recipe == "rrc":
            steps = [T.RandomResizedCrop(CROP)]
        else:
            steps = [
                T.Resize(CROP),
                T.CenterCrop(CROP),
                T.RandomCrop(CROP, padding=PAD, padding_mode="reflect"),
            ]
        tail = [T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
        self.transform = T.Compose(steps + tail)

    def __call__(self, sample: dict) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
        return self.transform(image), int(sample["cls"])


def _loader_pass(
    folder: Path, recipe: str, batch_size: int, workers: int, epoch: int
) -> tuple[int, float]:
    import webdataset as wds

    from jumpray.data.schema import list_shard_files

    t0 = time.perf_counter()
    torch.manual_seed(epoch)
    urls = [str(p) for p in list_shard_files(folder)]
    # Only the members the transform reads: never webdataset's default decoders (they unpickle).
    dataset = wds.WebDataset(
        urls, shardshuffle=False, select_files=lambda n: n.endswith((".jpg", ".cls"))
    ).map(_Sample(recipe))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    rows = 0
    for images, _labels in loader:
        rows += len(images)
    return rows, time.perf_counter() - t0


# -- report -----------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2, help="Ray CPUs = DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-images", type=int, default=300, help="per decoder set")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--lock", type=Path, default=None, help="hold this flock around Ray")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _lock import ray_lock

    from jumpray.data.convert import write_from_list
    from jumpray.log import setup_logging
    from jumpray.ray_utils import init_ray

    setup_logging("WARNING")
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one INFO line per dataset pass
    warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
    params = {"image_size": CROP, "channels": 3, "mean": MEAN, "std": STD, "recipe": "large"}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="jumpray-jpeg-") as tmp:
        root, folder = Path(tmp) / "clothing", Path(tmp) / "shards"
        t0 = time.perf_counter()
        list_file = make_dataset(root, args.images)
        make_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = write_from_list(
            list_file,
            root=root,
            out=folder,
            num_classes=NUM_CLASSES,
            max_samples_per_shard=max(1, args.images // (4 * args.cores)),
        )
        convert_s = time.perf_counter() - t0
        paths = sorted((root / "images").rglob("*.jpg"))[: args.decode_images]
        rng = np.random.default_rng(1)
        sets = {
            "200-320px": [p.read_bytes() for p in paths],
            "600-900px": [
                make_jpeg(rng, low=600, high=900) for _ in range(max(1, args.decode_images // 3))
            ],
        }
        kb = {k: round(float(np.mean([len(d) for d in v])) / 1024, 1) for k, v in sets.items()}
        decoders = decoder_table(sets, args.repeats)
        print(json.dumps(decoders), flush=True)  # early, in case a Ray pass fails

        with ray_lock(args.lock):
            t0 = time.perf_counter()
            init_ray(
                num_cpus=args.cores,
                object_store_memory=1024**3,
                include_dashboard=False,
                for_tests=True,
            )
            ray_start_s = time.perf_counter() - t0
            modes = ["ray", "ray_map_batches", "loader", "loader_rrc"]
            passes: dict[str, list[float]] = {mode: [] for mode in modes}
            scans: dict[str, list[float]] = {"ray": [], "ray_map_batches": []}
            for rep in range(args.repeats + 1):  # rep 0 warms up and is not counted
                for mode in modes:
                    if mode.startswith("ray"):
                        where = "consumer" if mode == "ray" else "map_batches"
                        rows, seconds, scan = _ray_pass(
                            folder, params, args.batch_size, epoch=rep, where=where
                        )
                        if rep:
                            scans[mode].append(scan)
                    else:
                        recipe = "rrc" if mode == "loader_rrc" else "same"
                        rows, seconds = _loader_pass(
                            folder, recipe, args.batch_size, args.cores, epoch=rep
                        )
                    assert rows == args.images, f"{mode} pass gave {rows} rows"
                    if rep:
                        passes[mode].append(seconds)
            import ray

            ray.shutdown()

    per_core = {k: [args.images / s / args.cores for s in v] for k, v in passes.items()}
    median = {k: statistics.median(v) for k, v in per_core.items()}
    result = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "images": args.images,
        "shards": len(index.shards),
        "cores": args.cores,
        "batch_size": args.batch_size,
        "jpeg_kb_mean": kb,
        "make_images_s": round(make_s, 2),
        "convert_s": round(convert_s, 2),
        "ray_start_s": round(ray_start_s, 2),
        "decode_ms_per_image": {
            name: {k: _spread(v) for k, v in table.items()} for name, table in decoders.items()
        },
        "pass_s": {k: [round(s, 3) for s in v] for k, v in passes.items()},
        "ray_scan_s": {k: [round(s, 3) for s in v] for k, v in scans.items()},
        "ray_samples_per_s_per_core_excluding_scan": {
            k: round(
                args.images
                / statistics.median([a - b for a, b in zip(passes[k], v, strict=True)])
                / args.cores,
                1,
            )
            for k, v in scans.items()
        },
        "samples_per_s_per_core": {k: _spread(v, 1) for k, v in per_core.items()},
        "ms_per_sample_core": {k: round(1e3 / v, 3) for k, v in median.items()},
        "ratios_over_loader": {
            k: round(median[k] / median["loader"], 3) for k in ("ray", "ray_map_batches")
        },
        "ratios_over_loader_rrc": {
            k: round(median[k] / median["loader_rrc"], 3) for k in ("ray", "ray_map_batches")
        },
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    _print_table(result)
    return 0


def _print_table(r: dict) -> None:
    load = r["load_average_1min_start_end"]
    print(f"{r['date_utc']} UTC, {r['cpu']} ({r['cpu_count']} CPUs), 1-min load {load}")
    print(f"{r['images']} JPEGs ({r['jpeg_kb_mean']} KB), {r['shards']} shards, {r['cores']} cores")
    print("\ndecode to 224x224 uint8, ms/image, one thread: median (min-max)")
    for name, table in r["decode_ms_per_image"].items():
        for key, s in table.items():
            print(f"  {name:10s} {key:13s} {s['median']:7.3f} ({s['min']:.3f}-{s['max']:.3f})")
    print("\npipeline samples/s per core: median (min-max), ms per sample-core")
    for key, s in r["samples_per_s_per_core"].items():
        ms = r["ms_per_sample_core"][key]
        print(f"  {key:15s} {s['median']:7.1f} ({s['min']:.1f}-{s['max']:.1f})  {ms:.2f} ms")
    print(f"  Ray excluding the scan: {r['ray_samples_per_s_per_core_excluding_scan']}")
    print(f"\nover loader: {r['ratios_over_loader']}")
    print(f"over loader_rrc: {r['ratios_over_loader_rrc']}")


if __name__ == "__main__":
    sys.exit(main())

"""Tiny shard builders for data-layer tests: raw tarfile, so shards can be malformed on purpose."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

EVIL_MARKER = "jumpray-evil-pickle-ran"


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of uint8 (H, W) or (H, W, 3)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def tiny_images(n: int, *, size: int = 8, channels: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size) or (n, size, size, 3) with a distinct value pattern per image."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def sample(key: str, *, image=None, cls="0", meta: dict | None = None, extra=None) -> list:
    """Members (name, bytes) of one sample; pass None to leave a member out."""
    members = []
    if image is not None:
        members.append((f"{key}.png", image))
    if cls is not None:
        members.append((f"{key}.cls", str(cls).encode()))
    if meta is not None:
        members.append((f"{key}.json", json.dumps(meta).encode()))
    for name, data in extra or []:
        members.append((f"{key}.{name}", data))
    return members


def write_tar(path: Path, samples: list[list[tuple[str, bytes]]]) -> Path:
    """Write the members of the samples, in order, as a tar."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for members in samples:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def write_index(folder: Path, shards: dict[str, int], *, num_classes: int = 3, **extra) -> None:
    body = {
        "format": "jumpray-shards/1",
        "num_samples": sum(shards.values()),
        "num_classes": num_classes,
        "class_names": [f"c{i}" for i in range(num_classes)],
        "has_clean_labels": True,
        "shards": [{"file": f, "num_samples": n} for f, n in shards.items()],
        **extra,
    }
    (folder / "index.json").write_text(json.dumps(body))


class _Evil:
    """Unpickling this creates the file ``target`` (what a malicious shard member would do)."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        code = f"open({self.target!r}, 'w').write('pwned')"
        return (eval, (code,))


def evil_pickle(target: Path) -> bytes:
    """Pickle bytes that create ``target`` when loaded (never load them outside a test)."""
    return pickle.dumps(_Evil(str(target)))


def truncate(path: Path, keep_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def shard_members(folder: Path) -> list[tuple[str, bytes]]:
    """Every tar member (name, bytes) of a shard folder, in index.json's shard order."""
    index = json.loads((folder / "index.json").read_text())
    out = []
    for shard in index["shards"]:
        with tarfile.open(folder / shard["file"]) as tar:
            out += [(m.name, tar.extractfile(m).read()) for m in tar]
    return out


def file_size(path: Path) -> int:
    return os.path.getsize(path)


def make_clothing1m(root):
    """A Clothing1M-shaped tree: images/<a>/<bb>/<name>.jpg and the label/ lists (docs/contract.md)."""
    images = tiny_images(6, size=16, channels=3, seed=1)
    paths = [f"images/{i % 2}/{i:02d}/{i:04d}.jpg" for i in range(6)]
    for path, img in zip(paths, images, strict=True):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(jpeg_bytes(img))
    label = root / "label"
    label.mkdir()
    noisy = [5, 3, 13, 0, 7, 7]
    (label / "noisy_label_kv.txt").write_text(
        "".join(f"{p} {y}\n" for p, y in zip(paths, noisy, strict=True))
    )
    (label / "clean_label_kv.txt").write_text(f"{paths[0]} 5\n{paths[2]} 1\n{paths[5]} 9\n")
    # Train keys in their own order (line number = id); paths[1] is not in the train list.
    (label / "noisy_train_key_list.txt").write_text(
        "\n".join([paths[4], paths[0], paths[2], paths[3]]) + "\n"
    )
    (label / "clean_test_key_list.txt").write_text(f"{paths[5]}\n")
    return paths, images, noisy


def make_webvision(root, labels):
    """A WebVision-shaped tree: info/train_filelist_google.txt and google/q<label>/img<i>.jpg."""
    (root / "info").mkdir(parents=True)
    lines = []
    for i, y in enumerate(labels):
        rel = f"google/q{y:04d}/img{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg_bytes(tiny_images(1, size=20, channels=3, seed=i)[0]))
        lines.append(f"{rel} {y}")
    (root / "info" / "train_filelist_google.txt").write_text("\n".join(lines) + "\n")
    return root

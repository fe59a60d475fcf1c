"""The single-process webdataset reader: same rows as written, no unpickling, on_error policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jumpray.data.augment import make_augmenter
from jumpray.data.convert import write_arrays
from jumpray.data.plain_reader import iter_plain
from jumpray.data.quarantine import QuarantineLog
from jumpray.errors import DataError

from ._build import EVIL_MARKER, evil_pickle, png_bytes, sample, tiny_images, write_tar


def test_plain_reader_yields_the_written_rows_with_views(tmp_path):
    images = tiny_images(10, size=6, seed=4)
    labels = np.arange(10) % 3
    write_arrays(tmp_path / "ds", images, labels, clean_labels=labels, max_samples_per_shard=4)
    aug = make_augmenter(image_size=6, channels=1, mean=[0.5], std=[0.5])
    batches = list(
        iter_plain(
            tmp_path / "ds", batch_size=4, augmenter=aug, generator=torch.Generator().manual_seed(0)
        )
    )
    assert [len(b["idx"]) for b in batches] == [4, 4, 2]
    idx = np.concatenate([b["idx"] for b in batches])
    assert idx.tolist() == list(range(10))
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[:, 0], images)
    assert np.concatenate([b["given_label"] for b in batches]).tolist() == labels.tolist()
    assert np.concatenate([b["clean_label"] for b in batches]).tolist() == labels.tolist()
    assert batches[2]["shard"].tolist() == ["train-000002.tar"] * 2
    assert batches[0]["weak"].shape == (4, 1, 6, 6) and batches[0]["strong"].dtype == np.float32


def test_plain_reader_skips_pickles_and_polices_bad_samples(tmp_path):
    target = tmp_path / EVIL_MARKER
    img = png_bytes(np.zeros((4, 4), np.uint8))
    write_tar(
        tmp_path / "a-000000.tar",
        [
            sample(
                "k0",
                image=img,
                cls=1,
                extra=[("pyd", evil_pickle(target)), ("pickle", evil_pickle(target))],
            ),
            sample("k1", image=b"junk", cls=0),
            sample("k2", image=img, cls="z"),
            sample("k3", image=img, cls=2),
        ],
    )
    with pytest.raises(DataError) as err:
        list(iter_plain(tmp_path, batch_size=8))
    assert (err.value.shard, err.value.key) == ("a-000000.tar", "k1")
    log = QuarantineLog("skip")
    [batch] = list(iter_plain(tmp_path, batch_size=8, on_error="skip", quarantine=log))
    # Without json, idx is the running position in the stream (like the Ray reader's assignment).
    assert batch["key"].tolist() == ["k0", "k3"] and batch["idx"].tolist() == [0, 3]
    assert [r[0] for r in log.rows] == ["k1", "k2"]
    assert not target.exists()

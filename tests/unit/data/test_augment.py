"""Weak/strong/test views: exact geometry, hand-computed photometric ops, per-sample randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jumpray.data.augment import STRONG_OPS, augment_batch, make_augmenter
from jumpray.errors import ConfigError


def _aug(size=8, channels=1, **kw):
    return make_augmenter(image_size=size, channels=channels, mean=[0.0], std=[1.0], **kw)


def test_weak_view_is_a_reflect_padded_crop_or_its_mirror_per_sample():
    aug = _aug(8)  # small recipe: pad 4
    base = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8)
    x = base.expand(64, 1, 8, 8)
    weak, _ = aug.train(x, torch.Generator().manual_seed(1))
    padded = F.pad(base.float(), (4, 4, 4, 4), mode="reflect")[0, 0] / 255.0
    candidates = {}
    for oy in range(9):
        for ox in range(9):
            crop = padded[oy : oy + 8, ox : ox + 8]
            candidates[(oy, ox, False)] = crop
            candidates[(oy, ox, True)] = crop.flip(-1)
    found = []
    for view in weak[:, 0]:
        match = [k for k, c in candidates.items() if torch.allclose(view, c, atol=1e-6)]
        assert match, "every weak view must be a crop (maybe mirrored) of the padded image"
        found.append(match[0])
    # Per-sample draws: 64 copies of one image get many different crops and both flips.
    assert len(set(found)) > 30 and {f[2] for f in found} == {True, False}


def test_views_are_reproducible_from_the_generator_and_test_view_is_a_centre_crop():
    aug = make_augmenter(image_size=8, channels=3, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.5])
    x = torch.randint(0, 256, (5, 3, 10, 10), dtype=torch.uint8)
    a = aug.train(x, torch.Generator().manual_seed(3))
    b = aug.train(x, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == a[1].shape == (5, 3, 8, 8) and a[0].dtype == torch.float32
    expected = (
        x[:, :, 1:9, 1:9].float() / 255.0 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    ) / (torch.tensor([0.2, 0.2, 0.5]).view(1, 3, 1, 1))
    torch.testing.assert_close(aug.test(x.numpy()), expected)
    # Gray input to an RGB augmenter: the gray plane is repeated.
    gray = aug.test(x[:, :1])
    torch.testing.assert_close(gray[:, 0] * 0.2 + 0.5, gray[:, 1] * 0.2 + 0.4)


def test_photometric_ops_match_hand_computed_values():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2)
    level, plus = torch.tensor([0.5]), torch.tensor([1.0])
    ops = STRONG_OPS
    torch.testing.assert_close(ops["invert"](x, level, plus), 1 - x)
    torch.testing.assert_close(
        ops["solarize"](x, level, plus), torch.tensor([0.2, 0.4, 0.4, 0.2]).view(1, 1, 2, 2)
    )
    # brightness factor 1 + 0.9 * 0.5 = 1.45, clamped to 1
    torch.testing.assert_close(
        ops["brightness"](x, level, plus), torch.tensor([0.29, 0.58, 0.87, 1.0]).view(1, 1, 2, 2)
    )
    # contrast factor 0.55 (sign -1) around the mean 0.5
    minus = torch.tensor([-1.0])
    torch.testing.assert_close(
        ops["contrast"](x, level, minus), (0.5 + 0.55 * (x - 0.5)).clamp(0, 1)
    )
    torch.testing.assert_close(
        ops["autocontrast"](x, level, plus), torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]).view(1, 1, 2, 2)
    )
    # posterize at level 0.4 keeps 8 - round(1.6) = 6 bits: multiples of 4 out of 255
    q = ops["posterize"](x, torch.tensor([0.4]), plus) * 255
    torch.testing.assert_close(q, torch.floor(x * 255 / 4) * 4)
    # equalize: two values, two pixels each -> 0 and 1
    two = torch.tensor([10, 10, 20, 20]).view(1, 1, 2, 2) / 255.0
    torch.testing.assert_close(
        ops["equalize"](two, level, plus), torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    )
    # solarize_add: + 0.5 * 110 / 255 below 0.5 only
    torch.testing.assert_close(
        ops["solarize_add"](x, level, plus),
        torch.tensor([0.2 + 55 / 255, 0.4 + 55 / 255, 0.6, 0.8]).view(1, 1, 2, 2),
    )


def test_cutout_is_a_gray_square_of_015_side():
    aug = _aug(32)
    zeros = torch.zeros(200, 1, 32, 32)
    out = aug.cutout(zeros, torch.Generator().manual_seed(0))
    counts = (out == 0.5).sum(dim=(1, 2, 3))
    assert counts.max().item() == int(0.15 * 32) ** 2 == 16  # 4 x 4 when fully inside
    assert counts.min().item() > 0 and (counts < 16).any()  # clipped at the borders sometimes


def test_strong_view_differs_per_sample_and_stays_in_range():
    aug = _aug(28, strong_magnitude=10)
    x = torch.full((64, 1, 28, 28), 128, dtype=torch.uint8)
    x[:, :, 10:18, 10:18] = 30
    weak, strong = aug.train(x, torch.Generator().manual_seed(0))
    assert strong.min() >= 0.0 and strong.max() <= 1.0
    assert len({tuple(s.flatten().tolist()) for s in strong}) > 40
    assert not torch.equal(weak, strong)


def test_augment_batch_numpy_wrapper_is_seeded_by_epoch_and_idx():
    params = {"image_size": 8, "channels": 1, "mean": [0.5], "std": [0.5]}
    batch = {
        "idx": np.array([3, 4]),
        "image": np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8), dtype=np.uint8),
    }
    a = augment_batch(dict(batch), augmenter=params, seed=1, epoch=0)
    b = augment_batch(dict(batch), augmenter=params, seed=1, epoch=0)
    c = augment_batch(dict(batch), augmenter=params, seed=1, epoch=1)
    assert "image" not in a and a["weak"].dtype == np.float32 and a["strong"].shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(a["strong"], b["strong"])
    assert not np.array_equal(a["strong"], c["strong"])
    t = augment_batch(dict(batch), augmenter=params, views="test", keep_image=True)
    np.testing.assert_allclose(t["view"], batch["image"] / 127.5 - 1.0, atol=1e-6)
    # views="weak": the weak view alone, the same crop and flip as train's under the same seed.
    w = augment_batch(dict(batch), augmenter=params, seed=1, epoch=0, views="weak")
    assert "strong" not in w
    np.testing.assert_allclose(w["weak"], a["weak"], atol=1e-6)


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: auto, small, large, none"):
        _aug(8, recipe="heavy")
    assert _aug(224).pad == 28 and _aug(32).pad == 4 and _aug(28, recipe="none").pad == 0

"""Weak, strong and test views as batched torch ops (docs/method.md, 'Augmentation'), per-sample random.

One set of functions serves Ray Data ``map_batches`` (numpy in, numpy out: :func:`augment_batch`)
and a training loop on CPU or GPU (torch in, torch out: :class:`Augmenter`). Every random choice is
drawn per sample from an explicit ``torch.Generator``, and the whole batch is transformed with
vectorised tensor ops (no Python loop over samples).

- weak view: reflect-pad, random crop back to ``image_size``, random horizontal flip. Padding is
  4 px for small images (28/32 px, as the reference's RandomCrop(32, padding 4)) and
  ``image_size / 8`` for large ones (the reference's 224 + 28 for Clothing1M/WebVision; store such
  images at 256 with ``data.image_size`` and train at 224 to get its Resize(256) + crop). The
  flip stays on for every dataset, as in the reference; for data where mirror images change the
  class (digits, text) use ``recipe="none"``.
- strong view: an independently drawn weak view, then RandAugment-style photometric ops: 2 ops
  drawn with replacement from :data:`STRONG_OPS`, each applied with probability 0.5 at a level
  drawn uniformly from 1..m-1 (m = ``strong_magnitude``) out of 10, then a gray cutout square of
  side ``int(0.15 * image_size)`` (4 px at 28/32). The reference pool also has geometric ops
  (rotate, shear, translate); they are left out here, the crop already moves the image.
- test view: centre crop (or resize when smaller) to ``image_size``.

All views are normalised to float32 with per-channel mean/std.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from jumpray.data.decode import resolve_normalization
from jumpray.errors import ConfigError

if TYPE_CHECKING:
    from jumpray.config import DataConfig

__all__ = [
    "Augmenter",
    "make_augmenter",
    "build_augmenter",
    "augment_batch",
    "STRONG_OPS",
    "RECIPES",
]

RECIPES = ("auto", "small", "large", "none")
_SMALL_MAX = 64  # "auto": images up to this side use the small recipe
_LUMA = (0.299, 0.587, 0.114)

Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance of (B, C, H, W) in [0, 1]."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (degenerate + _per_sample(factor) * (x - degenerate)).clamp_(0.0, 1.0)


def _factor(level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return 1.0 + sign * 0.9 * level  # PIL enhance factor in [0.1, 1.9]


def _autocontrast(x, level, sign):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp_min(1e-6), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def _brightness(x, level, sign):
    return _blend(torch.zeros_like(x), x, _factor(level, sign))


def _color(x, level, sign):
    return _blend(_gray(x).expand_as(x), x, _factor(level, sign)) if x.shape[1] == 3 else x


def _contrast(x, level, sign):
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(mean.expand_as(x), x, _factor(level, sign))


def _equalize(x, level, sign):
    b, c, h, w = x.shape
    q = (x * 255.0).round_().long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=x.dtype, device=x.device)
    hist.scatter_add_(1, q, torch.ones_like(q, dtype=x.dtype))
    cdf = hist.cumsum(dim=1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(h * w))).amin(
        dim=1, keepdim=True
    )
    span = (h * w - cdf_min).clamp_min(1.0)
    lut = ((cdf - cdf_min) / span).clamp_(0.0, 1.0)
    flat = (h * w - cdf_min) > 0  # a constant channel stays as it is
    out = torch.where(flat, lut.gather(1, q), q.to(x.dtype) / 255.0)
    return out.view(b, c, h, w)


def _invert(x, level, sign):
    return 1.0 - x


def _posterize(x, level, sign):
    shift = 2.0 ** (4.0 * level).round()  # keep 8 - round(4 * level) bits
    step = _per_sample(shift)
    return torch.floor(x * 255.0 / step) * step / 255.0


_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def _sharpness(x, level, sign):
    c = x.shape[1]
    kernel = _SMOOTH.to(x.device, x.dtype).expand(c, 1, 3, 3)
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    return _blend(smooth, x, _factor(level, sign))


def _solarize(x, level, sign):
    threshold = _per_sample(1.0 - level)
    return torch.where(x >= threshold, 1.0 - x, x)


def _solarize_add(x, level, sign):
    add = _per_sample(level * 110.0 / 255.0)
    return torch.where(x < 0.5, (x + add).clamp_(max=1.0), x)


STRONG_OPS: dict[str, Op] = {
    "autocontrast": _autocontrast,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "equalize": _equalize,
    "invert": _invert,
    "posterize": _posterize,
    "sharpness": _sharpness,
    "solarize": _solarize,
    "solarize_add": _solarize_add,
}


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Index i of a reflect-padded axis of length n (as F.pad "reflect") mapped into [0, n)."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def _rand(generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def _randint(generator: torch.Generator | None, low: int, high: int, n: int) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator)


@dataclass(frozen=True)
class Augmenter:
    """Batched views of uint8 (B, C, H, W) images; see the module docstring for the recipes.

    Build with :func:`make_augmenter`. Inputs may be torch tensors (any device) or numpy arrays;
    outputs are float32 torch tensors on the input's device.
    """

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    recipe: str
    pad: int
    strong_magnitude: int
    num_ops: int = 2
    op_prob: float = 0.5
    cutout_frac: float = 0.15

    # -- helpers ------------------------------------------------------------------------------

    def _prepare(self, images) -> torch.Tensor:
        """A (B, C, H, W) tensor with H, W >= ``image_size`` (dtype kept unless upsampled)."""
        if isinstance(images, np.ndarray) and not images.flags.writeable:
            images = images.copy()  # Ray hands out read-only arrays; torch warns on those
        x = torch.as_tensor(images)
        if x.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.image_size:
            x = F.interpolate(
                self._to_unit(x), size=(self.image_size,) * 2, mode="bilinear", align_corners=False
            )
        return x

    def _to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """float32 in [0, 1] with ``channels`` channels (gray repeated, RGB averaged to gray)."""
        x = x.float().mul_(1.0 / 255.0) if x.dtype == torch.uint8 else x.float()
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else _gray(x)
        return x.contiguous()

    def normalize(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        """(x * scale - mean) / std per channel, in one pass; x float in [0, 1] / scale."""
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return torch.addcmul(-mean / std, x, scale / std)

    # -- views --------------------------------------------------------------------------------

    def crop_flip(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random ``image_size`` crop of the image reflect-padded by ``pad``, random flip.

        The padding is never materialised: crop rows/columns index the source through the
        reflection, so a batch costs one gather of the output size, in the input's dtype.
        """
        b, c, h, w = x.shape
        s, p = self.image_size, self.pad
        if self.recipe == "none":
            return self._center(x)
        oy = (_rand(generator, b) * (h + 2 * p - s + 1)).long().clamp_(max=h + 2 * p - s)
        ox = (_rand(generator, b) * (w + 2 * p - s + 1)).long().clamp_(max=w + 2 * p - s)
        flip = _rand(generator, b) < 0.5
        ar = torch.arange(s)
        rows = _reflect(ar + oy[:, None] - p, h)  # (B, S)
        cols = _reflect(torch.where(flip[:, None], s - 1 - ar, ar) + ox[:, None] - p, w)
        index = (rows[:, :, None] * w + cols[:, None, :]).to(x.device)
        index = index.view(b, 1, s * s).expand(b, c, s * s)
        return x.reshape(b, c, h * w).gather(2, index).view(b, c, s, s)

    def photometric(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``num_ops`` rounds of a random op per sample (probability ``op_prob``), then cutout."""
        b = x.shape[0]
        names = list(STRONG_OPS)
        top = max(self.strong_magnitude, 2)
        for _ in range(self.num_ops):
            choice = _randint(generator, 0, len(names), b)
            apply = _rand(generator, b) < self.op_prob
            level = (_randint(generator, 1, top, b).float() / 10.0).clamp_(max=1.0).to(x.device)
            sign = torch.where(_rand(generator, b) < 0.5, -1.0, 1.0).to(x.device)
            for k, name in enumerate(names):
                sel = torch.nonzero(apply & (choice == k)).flatten().to(x.device)
                if sel.numel():
                    x[sel] = STRONG_OPS[name](x[sel], level[sel], sign[sel])
        return self.cutout(x, generator)

    def cutout(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A gray (0.5) square of side ``int(cutout_frac * image_size)`` at a random centre."""
        b, _, h, w = x.shape
        side = int(self.cutout_frac * w)
        if side < 1:
            return x
        cy = (_rand(generator, b) * h).to(x.device).view(b, 1, 1, 1)
        cx = (_rand(generator, b) * w).to(x.device).view(b, 1, 1, 1)
        ys = torch.arange(h, device=x.device).view(1, 1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, 1, w)
        y0, x0 = (cy - side / 2).floor(), (cx - side / 2).floor()
        inside = (ys >= y0) & (ys < y0 + side) & (xs >= x0) & (xs < x0 + side)
        return torch.where(inside, torch.full_like(x, 0.5), x)

    def _center(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.image_size
        top, left = (h - s) // 2, (w - s) // 2
        return x[:, :, top : top + s, left : left + s]

    def train(
        self, images, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(weak, strong) normalised float32 (B, C, S, S) views of uint8 (B, C, H, W) images."""
        x = self._prepare(images)
        weak = self._to_unit(self.crop_flip(x, generator))
        if self.recipe == "none":
            return self.normalize(weak), self.normalize(weak)
        strong = self.photometric(self._to_unit(self.crop_flip(x, generator)), generator)
        return self.normalize(weak), self.normalize(strong)

    def weak(self, images, generator: torch.Generator | None = None) -> torch.Tensor:
        """The normalised float32 (B, C, S, S) weak view alone (crop and flip, no photometric op).

        The same crop and flip as the first view of :meth:`train` under a generator in the same
        state.
        """
        x = self.crop_flip(self._prepare(images), generator)
        if x.dtype == torch.uint8 and x.shape[1] == self.channels:
            return self.normalize(x.float(), scale=1.0 / 255.0)  # skips a pass over the batch
        return self.normalize(self._to_unit(x))

    def test(self, images) -> torch.Tensor:
        """The normalised float32 (B, C, S, S) test view (centre crop)."""
        x = self._center(self._prepare(images))
        if x.dtype == torch.uint8 and x.shape[1] == self.channels:
            return self.normalize(x.float(), scale=1.0 / 255.0)  # skips a pass over the batch
        return self.normalize(self._to_unit(x))


def make_augmenter(
    *,
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    recipe: str = "auto",
    strong_magnitude: int = 5,
) -> Augmenter:
    """Build an :class:`Augmenter`.

    Args:
        image_size: S, the side of every output view.
        channels: C of the outputs (1 or 3); inputs are converted when they differ.
        mean, std: C values (or 1, broadcast) on the 0..1 scale.
        recipe: ``auto`` (small up to 64 px, else large), ``small``, ``large`` or ``none``.
        strong_magnitude: m of the strong view (levels 1..m-1 out of 10).

    Raises:
        ConfigError: an unknown recipe (lists the valid ones) or a bad mean/std length.
    """
    if recipe not in RECIPES:
        raise ConfigError(f"data.augment: unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    if recipe == "auto":
        recipe = "small" if image_size <= _SMALL_MAX else "large"
    mean_t = tuple(float(m) for m in mean) * (channels if len(mean) == 1 else 1)
    std_t = tuple(float(s) for s in std) * (channels if len(std) == 1 else 1)
    if len(mean_t) != channels or len(std_t) != channels:
        raise ConfigError(
            f"data.mean/std: need 1 or {channels} values, got {len(mean)} and {len(std)}"
        )
    pad = {"small": 4, "large": image_size // 8, "none": 0}[recipe]
    return Augmenter(image_size, channels, mean_t, std_t, recipe, pad, strong_magnitude)


def build_augmenter(
    data: DataConfig,
    *,
    channels: int,
    image_hw: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    recipe: str | None = None,
) -> Augmenter:
    """The :class:`Augmenter` for rows of ``channels`` x ``image_hw`` images under ``data``.

    The one place that turns ``data.*`` settings into views: training (the plain loop and the Ray
    Train worker) and the bench build their augmenter here.

    Args:
        data: the run's ``data`` config (``image_size``, ``mean``/``std``, ``augment``,
            ``strong_magnitude``).
        channels: C of the rows.
        image_hw: (H, W) of the rows; the views are ``data.image_size`` or else the shorter side.
        mean, std: the normalisation already resolved for these rows (the launcher's
            :func:`~jumpray.data.decode.resolve_normalization` with the shards' suggestion);
            None = ``data.mean``/``data.std``, else 0.5.
        recipe: overrides ``data.augment`` (for example ``none`` for test views only).

    Raises:
        ConfigError: see :func:`make_augmenter`.
    """
    mean_t, std_t = resolve_normalization(
        mean if mean is not None else data.mean,
        std if std is not None else data.std,
        channels=channels,
    )
    return make_augmenter(
        image_size=data.image_size or min(int(v) for v in image_hw),
        channels=channels,
        mean=mean_t,
        std=std_t,
        recipe=recipe or data.augment,
        strong_magnitude=data.strong_magnitude,
    )


@functools.lru_cache(maxsize=8)
def _cached(params: tuple) -> Augmenter:
    return make_augmenter(**dict(params))


def augment_batch(
    batch: dict[str, np.ndarray],
    *,
    augmenter: dict,
    seed: int = 0,
    epoch: int = 0,
    views: str = "train",
    keep_image: bool = False,
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` wrapper: numpy batch in, ``weak``/``strong`` (or ``view``) out.

    Args:
        batch: rows of :mod:`jumpray.data.schema` (``image`` uint8 (B, C, H, W), ``idx``).
        augmenter: keyword arguments of :func:`make_augmenter` (plain data, so Ray can ship it).
        seed, epoch: the generator is seeded from (seed, epoch, the batch's first idx), so a
            batch's views are reproducible and differ between epochs.
        views: ``train`` adds ``weak`` and ``strong``; ``weak`` adds ``weak`` alone (a one-view
            loader, as the JPEG benchmark measures); ``test`` adds ``view``.
        keep_image: keep the uint8 ``image`` column (dropped by default to move less data).

    Returns:
        The batch with float32 (B, C, S, S) view columns.
    """
    aug = _cached(
        tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in augmenter.items()))
    )
    out = dict(batch)
    images = out["image"] if keep_image else out.pop("image")
    if views == "test":
        out["view"] = aug.test(images).numpy()
        return out
    first = int(batch["idx"][0]) if len(batch["idx"]) else 0
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, epoch, first]).generate_state(1)[0])
    )
    if views == "weak":
        out["weak"] = aug.weak(images, generator).numpy()
        return out
    weak, strong = aug.train(images, generator)
    out["weak"], out["strong"] = weak.numpy(), strong.numpy()
    return out

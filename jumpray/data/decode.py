"""Image decoding to uint8 (C, H, W) arrays, pixel statistics and the normalisation choice.

Only image bytes go through here, and only through PIL's and libjpeg-turbo's image decoders (no
pickle, no eval). Sizing follows the official recipe, docs/method.md (resize the shorter side, then
crop to a square). The JPEG decoder was chosen by measurement, docs/architecture.md,
'JPEG decoding': an RGB, gray or CMYK JPEG is decoded by ``torchvision.io.decode_jpeg`` unless a
reduced DCT scale (PIL's ``draft``) still gives at least the target size, which makes decoding big
web images several times faster; everything is resized with torchvision's uint8 antialiased
bilinear kernel. :func:`decode_jpeg_batch` decodes a batch on a GPU (nvJPEG), sized the same way.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from jumpray.errors import ConfigError, DataError

if TYPE_CHECKING:  # torch is imported where pixels are decoded: a process that only scans headers
    import torch  # or unpickles a read plan (Ray Data's coordinators) skips its 2-3 s import

__all__ = [
    "decode_image",
    "decode_jpeg_batch",
    "image_header",
    "inspect_image",
    "encode_png",
    "PixelStats",
    "resolve_normalization",
    "DEFAULT_MEAN",
    "DEFAULT_STD",
]

DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.5
_GRAY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def _channels_of(mode: str) -> int:
    return 1 if mode in _GRAY_MODES else 3


def _to_channels(im: Image.Image, channels: int) -> Image.Image:
    target = "L" if channels == 1 else "RGB"
    if im.mode == target:
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # 16-bit / 32-bit gray: keep the top 8 bits instead of PIL's clipping at 255.
        wide = np.asarray(im, dtype=np.float64)
        top = wide.max() if wide.size else 0.0
        scale = 255.0 / top if top > 255 else 1.0
        im = Image.fromarray(np.clip(wide * scale, 0, 255).astype(np.uint8), "L")
    return im.convert(target)


# JPEG modes libjpeg-turbo (torchvision) converts exactly as PIL does; others stay with PIL.
_TORCH_JPEG_MODES = ("RGB", "L", "CMYK")
_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"


@functools.cache
def _torch_jpeg_decoder() -> Callable | None:
    """``torchvision.io.decode_jpeg``, or None where this torchvision no longer has it.

    torchvision 0.29 deprecates its decoders (in favour of torchcodec); when they go, PIL decodes.
    """
    try:
        from torchvision.io import decode_jpeg
    except ImportError:
        return None
    return decode_jpeg


def _draft_reduces(size: tuple[int, int], image_size: int | None) -> bool:
    """Whether PIL's ``draft`` would decode a JPEG of ``size`` (W, H) at a reduced DCT scale.

    ``draft`` picks the largest of 1/2, 1/4, 1/8 that keeps both sides >= ``image_size``, as
    ``min(W // S, H // S)`` decides; the decoded image is therefore never smaller than the crop.
    """
    return bool(image_size) and min(size[0] // image_size, size[1] // image_size) >= 2


def _decode_jpegs(images: Sequence[bytes], channels: int, device: torch.device) -> list:
    """[uint8 (C, H_i, W_i)] of JPEG bytes, one ``decode_jpeg`` call: libjpeg-turbo on the CPU,
    nvJPEG on CUDA. Raises RuntimeError on bad bytes (one bad image fails the call)."""
    import torch
    from torchvision.io import ImageReadMode

    decode = _torch_jpeg_decoder()
    assert decode is not None  # callers check first
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    # bytearray: torch.frombuffer wants a writable buffer (it warns on bytes).
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in images]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _TV_DEPRECATION, DeprecationWarning)
        return decode(tensors, mode=mode, device=device)


def _resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (C, H, W) so the shorter side is ``size``, then centre-crop a square.

    torchvision's antialiased bilinear resize has a uint8 kernel on CPU (several times faster
    than PIL's ``resize``, benchmarks/README.md, 'JPEG pipeline') and runs on any device.
    """
    from torchvision.transforms.v2.functional import center_crop, resize

    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    return center_crop(resize(x, [new_h, new_w], antialias=True), [size, size])


class _TooLarge(Exception):
    """An image over the caller's pixel limit (not a decoding failure)."""


def _undecodable(exc: Exception) -> str:
    # PIL quotes the in-memory file object's address, torchvision its C++ source file and line;
    # drop both so reasons are stable.
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
    text = re.sub(r"^decode_jpeg, \S+:\d+, ", "", text)
    return f"image does not decode ({type(exc).__name__}: {text})"


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    if im.format not in ("JPEG", "PNG", "WEBP", "MPO", "GIF", "BMP", "TIFF"):
        raise ValueError(f"unsupported image format {im.format}")
    return im


def decode_image(
    data: bytes,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode encoded image bytes to a uint8 (C, H, W) array.

    Args:
        data: encoded bytes (JPEG, PNG, WebP; GIF/BMP/TIFF are tolerated).
        channels: 1 (gray) or 3 (RGB) to force; None keeps gray as 1 and anything else as 3.
        image_size: resize the shorter side to this and centre-crop a square; None keeps the size.
        max_pixels: refuse an image that would be decoded at more than this many pixels (after
            the reduced JPEG decode); None = PIL's own decompression-bomb limit only.

    Returns:
        uint8 (C, H, W), C-contiguous.

    Raises:
        DataError: the bytes do not decode (the reason quotes PIL's message), or the image is
            larger than ``max_pixels``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            x = _decode_tensor(
                data, channels=channels, image_size=image_size, max_pixels=max_pixels
            )
            if image_size:
                x = _resize_center_crop(x, image_size)
    except _TooLarge as exc:
        raise DataError(f"image too large to decode here ({exc})") from None
    except Exception as exc:  # PIL signals bad data with many types (OSError, SyntaxError, ...)
        raise DataError(_undecodable(exc)) from None
    return np.ascontiguousarray(x.numpy())


def _decode_tensor(
    data: bytes, *, channels: int | None, image_size: int | None, max_pixels: int | None
) -> torch.Tensor:
    """uint8 (C, H, W) at the decoded size: at least ``image_size`` on each side (or as stored).

    Raises:
        _TooLarge: over ``max_pixels`` after the reduced JPEG decode.
        Exception: whatever the decoder raises on bad bytes.
    """
    import torch

    im = _open(data)
    target = channels or _channels_of(im.mode)
    use_torch = (
        im.format == "JPEG"
        and im.mode in _TORCH_JPEG_MODES
        and not _draft_reduces(im.size, image_size)
        and _torch_jpeg_decoder() is not None
    )
    if image_size and im.format == "JPEG" and not use_torch:
        im.draft("L" if target == 1 else "RGB", (image_size, image_size))
    if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:
        raise _TooLarge(f"{im.size[0]}x{im.size[1]} is over {max_pixels} pixels")
    if use_torch:
        return _decode_jpegs([data], target, torch.device("cpu"))[0]
    arr = np.array(_to_channels(im, target), dtype=np.uint8)  # a writable copy, for torch
    return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


def _whole_jpeg(data: bytes) -> bool:
    """Starts with the JPEG start marker and ends with its end marker (padding zeros allowed).

    A truncated file fails the end test and goes to the CPU decoder, which raises on it; a device
    decoder may fill the missing rows silently instead.
    """
    return data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\0")[-2:] == b"\xff\xd9"


def decode_jpeg_batch(
    images: Sequence[bytes],
    *,
    image_size: int,
    channels: int = 3,
    device: str | torch.device = "cuda",
) -> torch.Tensor:
    """Decode a batch of encoded images on ``device`` to uint8 (B, C, S, S), S = ``image_size``.

    Whole JPEGs go to ``torchvision.io.decode_jpeg`` on the device (nvJPEG on CUDA), in one
    call; other formats, truncated JPEGs, and a batch the device decoder refuses, are decoded one
    by one by
    :func:`decode_image` on the CPU, so bad bytes raise the same :class:`DataError` with the same
    reason as the CPU path. Sizing is :func:`decode_image`'s (shorter side, centre crop), done on
    the device.

    Args:
        images: B encoded images.
        image_size: S.
        channels: C, 1 or 3.
        device: where to decode and resize (``"cuda"``, ``"cuda:1"``, or ``"cpu"``).

    Returns:
        uint8 (B, C, S, S) on ``device``.

    Raises:
        DataError: an image does not decode (the reason of :func:`decode_image`).
    """
    import torch

    device = torch.device(device)
    out = torch.empty((len(images), channels, image_size, image_size), dtype=torch.uint8)
    out = out.to(device)
    jpeg = [i for i, data in enumerate(images) if _whole_jpeg(data)]
    for i in jpeg:
        image_header(images[i])  # PIL's decompression-bomb limit, before any device memory
    other = sorted(set(range(len(images))) - set(jpeg))
    if jpeg and _torch_jpeg_decoder() is not None:
        try:
            decoded = _decode_jpegs([images[i] for i in jpeg], channels, device)
        except RuntimeError:  # one bad image fails the whole call: find it on the CPU path
            other = list(range(len(images)))
        else:
            for i, x in zip(jpeg, decoded, strict=True):
                out[i] = _resize_center_crop(x, image_size)
    else:
        other = list(range(len(images)))
    for i in other:
        pixels = decode_image(images[i], channels=channels, image_size=image_size)
        out[i] = torch.from_numpy(pixels).to(device)
    return out


def image_header(data: bytes) -> tuple[int, int, int]:
    """(C, H, W) an image would decode to, from its header only (no pixel is decoded).

    Raises:
        DataError: the bytes are not an image of a supported format.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = _open(data)
            w, h = im.size
            return _channels_of(im.mode), int(h), int(w)
    except Exception as exc:  # PIL signals bad data with many types
        raise DataError(_undecodable(exc)) from None


def inspect_image(data: bytes, *, thumb_size: int = 32) -> tuple[str, int, int, int, np.ndarray]:
    """Fully decode an image once to prove it is readable; return its facts and a thumbnail.

    JPEGs are decoded at a reduced DCT scale (every coefficient is still parsed, so a corrupt
    stream still fails), which keeps a million-image verification pass affordable.

    Returns:
        (format, channels, height, width, thumbnail uint8 (C, t, t)) with the original size.

    Raises:
        DataError: the bytes do not decode.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = _open(data)
            fmt, (w, h), c = im.format, im.size, _channels_of(im.mode)
            if fmt == "JPEG":
                im.draft("L" if c == 1 else "RGB", (thumb_size, thumb_size))
            im.load()
            im = _to_channels(im, c).resize((thumb_size, thumb_size), Image.Resampling.BILINEAR)
            thumb = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # PIL signals bad data with many types
        raise DataError(_undecodable(exc)) from None
    thumb = thumb[None] if thumb.ndim == 2 else thumb.transpose(2, 0, 1)
    return str(fmt), c, h, w, np.ascontiguousarray(thumb)


def encode_png(image: np.ndarray) -> bytes:
    """Encode uint8 (H, W) or (H, W, C) (C = 1 or 3) as PNG bytes (lossless, compress level 1)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise DataError(f"images must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise DataError(f"an image must be (H, W) or (H, W, 3), got shape {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class PixelStats:
    """Running per-channel mean and std of uint8 images, reported on the 0..1 scale.

    Args:
        channels: C of the result; gray images count as RGB (repeated), RGB as gray (averaged).
    """

    def __init__(self, channels: int):
        self.channels = channels
        self.sum = np.zeros(channels)
        self.sum_sq = np.zeros(channels)
        self.count = 0

    def add(self, image: np.ndarray) -> None:
        """Add one uint8 (C, H, W) image (or thumbnail)."""
        x = image.reshape(image.shape[0], -1).astype(np.float64) / 255.0
        if x.shape[0] != self.channels:
            x = np.broadcast_to(x.mean(axis=0, keepdims=True), (self.channels, x.shape[1]))
        self.sum += x.sum(axis=1)
        self.sum_sq += (x * x).sum(axis=1)
        self.count += x.shape[1]

    def result(self) -> tuple[list[float] | None, list[float] | None]:
        """(mean, std), each a list of C floats rounded to 4 digits; (None, None) when empty."""
        if not self.count:
            return None, None
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sum_sq / self.count - mean**2, 1e-12))
        return [round(float(m), 4) for m in mean], [round(float(v), 4) for v in std]


def resolve_normalization(
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    *,
    channels: int,
    index_mean: Sequence[float] | None = None,
    index_std: Sequence[float] | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pick the per-channel normalisation: config values, else the index's suggestion, else 0.5.

    Args:
        mean, std: ``data.mean`` / ``data.std`` (None = not set).
        channels: C of the images the values apply to.
        index_mean, index_std: the suggestion stored in ``index.json``.

    Returns:
        (mean, std), each a tuple of C floats.

    Raises:
        ConfigError: a length is neither 1 nor C, or a std is not positive.
    """

    def pick(name: str, value, suggested, default: float) -> tuple[float, ...]:
        if value is None:
            value = suggested if suggested is not None else [default]
            name = "index.json " + name if suggested is not None else name
        values = [float(v) for v in value]
        if len(values) == 1:
            values *= channels
        if len(values) != channels and len(values) == 3 and channels == 1:
            values = [sum(values) / 3]  # an RGB suggestion applied to gray images
        if len(values) != channels:
            raise ConfigError(f"data.{name}: {len(values)} values for {channels}-channel images")
        return tuple(values)

    m = pick("mean", mean, index_mean, DEFAULT_MEAN)
    s = pick("std", std, index_std, DEFAULT_STD)
    if min(s) <= 0:
        raise ConfigError(f"data.std: every value must be > 0, got {list(s)}")
    return m, s

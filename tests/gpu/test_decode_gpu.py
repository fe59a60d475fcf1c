"""JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg``), skipped without CUDA:
the same sizes and nearly the same pixels as the CPU decoder, PNG mixed in, bad bytes -> DataError."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from jumpray.data.decode import decode_image, decode_jpeg_batch, encode_png
from jumpray.errors import DataError

pytestmark = pytest.mark.gpu


def _jpeg(h: int, w: int, seed: int, *, gray: bool = False) -> bytes:
    cells = np.random.default_rng(seed).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    image = Image.fromarray(cells).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    (image.convert("L") if gray else image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_gpu_batch_decode_matches_the_cpu_decoder():
    images = [_jpeg(260, 300, 0), _jpeg(900, 700, 1), _jpeg(240, 250, 2, gray=True)]
    images.append(encode_png(np.full((230, 240, 3), 90, np.uint8)))
    out = decode_jpeg_batch(images, image_size=224, channels=3, device="cuda")
    assert out.device.type == "cuda" and out.shape == (4, 3, 224, 224) and out.dtype == torch.uint8
    for i, data in enumerate(images):
        cpu = decode_image(data, channels=3, image_size=224).astype(np.int16)
        # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a level or two; the 900 x 700
        # image is also decoded at full scale here (no draft on the GPU) before the same resize.
        assert np.abs(out[i].cpu().numpy().astype(np.int16) - cpu).mean() < 3.0


def test_gpu_batch_with_a_bad_jpeg_raises_the_cpu_reason():
    good = _jpeg(260, 300, 0)
    with pytest.raises(DataError, match="image does not decode"):
        decode_jpeg_batch([good, good[: len(good) // 2]], image_size=224, device="cuda")
    broken = bytearray(good)
    broken[len(good) // 2 : len(good) // 2 + 64] = b"\xff\x00" * 32  # whole, but bad inside
    try:
        decode_jpeg_batch([good, bytes(broken)], image_size=224, device="cuda")
    except DataError as err:
        assert "image does not decode" in str(err)

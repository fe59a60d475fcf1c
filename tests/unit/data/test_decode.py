"""Image decoding, channel/size handling, pixel statistics and the normalisation choice."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jumpray.data.decode import (
    PixelStats,
    decode_image,
    encode_png,
    inspect_image,
    resolve_normalization,
)
from jumpray.errors import ConfigError, DataError

from ._build import jpeg_bytes


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_gray_rgb_rgba_palette_and_16_bit_become_uint8_chw():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(decode_image(encode_png(gray)), gray[None])
    rgb = np.dstack([gray, gray + 1, gray + 2])
    np.testing.assert_array_equal(decode_image(encode_png(rgb)), rgb.transpose(2, 0, 1))
    rgba = Image.fromarray(np.dstack([rgb, np.full((3, 4), 7, np.uint8)]), "RGBA")
    np.testing.assert_array_equal(decode_image(_encode(rgba)), rgb.transpose(2, 0, 1))
    assert decode_image(_encode(Image.fromarray(rgb).convert("P"))).shape == (3, 3, 4)
    wide = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    out = decode_image(_encode(wide))
    assert out.shape == (1, 3, 4) and out.max() == 255 and out[0, 0, 0] == 0
    # Forcing channels: gray -> 3 equal planes; RGB -> luminance.
    assert np.array_equal(decode_image(encode_png(gray), channels=3)[2], gray)
    assert decode_image(encode_png(rgb), channels=1).shape == (1, 3, 4)


def test_resize_shorter_side_then_centre_crop():
    # 4 x 8 image whose columns are 0..7 (x 30): resize the shorter side 4 -> 2, crop 2 x 2 centre.
    wide = np.tile((np.arange(8, dtype=np.uint8) * 30), (4, 1))
    out = decode_image(encode_png(wide), image_size=2)
    assert out.shape == (1, 2, 2)
    assert out[0, 0, 0] < out[0, 0, 1] and 60 < out[0, 0, 0] < 150  # the middle columns survive
    big = np.full((64, 48, 3), 200, np.uint8)
    assert decode_image(jpeg_bytes(big), image_size=16).shape == (3, 16, 16)  # JPEG draft path


def test_garbage_raises_a_stable_data_error():
    with pytest.raises(DataError) as err:
        decode_image(b"\x89PNG\r\n\x1a\n nonsense")
    assert err.value.reason.startswith("image does not decode (")
    assert "0x" not in err.value.reason  # no object address in the message
    with pytest.raises(DataError):
        inspect_image(jpeg_bytes(np.zeros((8, 8), np.uint8))[:40])
    fmt, c, h, w, thumb = inspect_image(jpeg_bytes(np.zeros((40, 30, 3), np.uint8)), thumb_size=8)
    assert (fmt, c, h, w, thumb.shape) == ("JPEG", 3, 40, 30, (3, 8, 8))


def test_pixel_stats_and_normalisation_choice():
    stats = PixelStats(3)
    stats.add(np.zeros((3, 2, 2), np.uint8))
    stats.add(np.full((1, 2, 2), 255, np.uint8))  # gray counted on every channel
    mean, std = stats.result()
    assert mean == [0.5, 0.5, 0.5] and std == [0.5, 0.5, 0.5]
    assert PixelStats(1).result() == (None, None)
    assert resolve_normalization(None, None, channels=3) == ((0.5,) * 3, (0.5,) * 3)
    assert resolve_normalization(None, None, channels=1, index_mean=[0.3], index_std=[0.2]) == (
        (0.3,),
        (0.2,),
    )
    assert resolve_normalization([0.1], [0.2], channels=3, index_mean=[0.9] * 3) == (
        (0.1,) * 3,
        (0.2,) * 3,
    )
    with pytest.raises(ConfigError, match="data.mean: 2 values for 3-channel"):
        resolve_normalization([0.1, 0.2], None, channels=3)
    with pytest.raises(ConfigError, match="data.std"):
        resolve_normalization(None, [0.0], channels=1)

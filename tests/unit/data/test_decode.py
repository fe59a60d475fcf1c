"""Image decoding, channel/size handling, pixel statistics and the normalisation choice."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from jumpray.data.decode import (
    PixelStats,
    _decode_tensor,
    _draft_reduces,
    decode_image,
    decode_jpeg_batch,
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


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 (h, w, 3): a smooth colour field, so JPEG and resizing errors stay small."""
    cells = np.random.default_rng(seed).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(cells).resize((w, h), Image.Resampling.BICUBIC))


def test_jpeg_decoder_choice_draft_only_where_it_reduces_and_never_below_the_crop():
    assert not _draft_reduces((447, 600), 224) and _draft_reduces((448, 600), 224)
    assert not _draft_reduces((900, 900), None)
    # Draft path (a 1/2 or 1/4 DCT scale): the decoded image is reduced but still covers the crop.
    for w, h in [(700, 460), (1000, 2000), (449, 449)]:
        x = _decode_tensor(jpeg_bytes(_photo(h, w)), channels=3, image_size=224, max_pixels=None)
        assert min(x.shape[1:]) >= 224 and x.shape[1] < h and x.shape[2] < w
    # torchvision path (no reduction possible): the stored size.
    x = _decode_tensor(jpeg_bytes(_photo(260, 300)), channels=3, image_size=224, max_pixels=None)
    assert tuple(x.shape) == (3, 260, 300)


def test_jpeg_paths_agree_with_pil_and_keep_gray_and_cmyk():
    rgb = _photo(260, 300)
    data = jpeg_bytes(rgb)
    exact = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_image(data), exact)  # libjpeg-turbo == PIL's decode
    out = decode_image(data, image_size=224)
    ref = np.asarray(Image.fromarray(exact.transpose(1, 2, 0)).resize((258, 224))).astype(int)
    ref = ref[:, 17:241].transpose(2, 0, 1)
    assert out.shape == (3, 224, 224) and np.abs(out.astype(int) - ref).mean() < 2.0
    gray = jpeg_bytes(rgb[..., 0])
    assert decode_image(gray, image_size=224).shape == (1, 224, 224)
    planes = decode_image(gray, channels=3)
    assert planes.shape == (3, 260, 300) and (planes[0] == planes[2]).all()
    cmyk = _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG")
    want = np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_image(cmyk), want)
    big = decode_image(jpeg_bytes(_photo(700, 900)), image_size=224)  # the draft path
    assert big.shape == (3, 224, 224)


def test_corrupt_jpeg_gives_a_stable_data_error_on_both_paths():
    for size, image_size in [((260, 300), 224), ((700, 900), 224)]:  # torchvision, then draft
        data = jpeg_bytes(_photo(*size))
        with pytest.raises(DataError) as err:
            decode_image(data[: len(data) // 2], image_size=image_size)
        reason = err.value.reason
        assert reason.startswith("image does not decode (") and "truncated" in reason
        assert ".cpp" not in reason and "0x" not in reason


def test_decode_jpeg_batch_on_cpu_matches_decode_image_and_takes_png():
    images = [jpeg_bytes(_photo(260, 300, seed=1)), encode_png(_photo(230, 240, seed=2))]
    images.append(jpeg_bytes(_photo(240, 280, seed=3)[..., 1]))  # a gray JPEG, as RGB
    out = decode_jpeg_batch(images, image_size=224, channels=3, device="cpu")
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.uint8
    for i, data in enumerate(images):
        np.testing.assert_array_equal(
            out[i].numpy(), decode_image(data, channels=3, image_size=224)
        )
    with pytest.raises(DataError, match="image does not decode"):
        decode_jpeg_batch([images[0], images[0][:300]], image_size=224, device="cpu")


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

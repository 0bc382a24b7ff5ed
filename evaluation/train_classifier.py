"""Train the domain classifier on the training split only, deterministically (fixed seed, deterministic ops).

Augmentation is a small random affine warp (shift, rotation, scale) so 4,000 training digits are enough for a
held-out accuracy near 99%. The held-out split (a source's own validation split where it has one) is touched
once, after training, to measure accuracy; a test split is never touched here.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.classifier import (
    CONFIG_FORMAT,
    Classifier,
    ClassifierArchitecture,
    DigitClassifier,
    architecture_dict,
    save_classifier,
)
from train.data import (
    DEFAULT_HELD_OUT_FRACTION,
    DEFAULT_SPLIT_SEED,
    EMBEDDED_SOURCE,
    load_images,
    split_for,
    to_model_range,
)


@dataclass(frozen=True)
class ClassifierTraining:
    data: str = EMBEDDED_SOURCE
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION  # fraction and seed: for data without its own splits
    split_seed: int = DEFAULT_SPLIT_SEED
    seed: int = 0
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 3e-3  # peak of a one-cycle schedule (AdamW)
    weight_decay: float = 1e-4
    max_shift: float = 2.0  # pixels
    max_rotation: float = 10.0  # degrees
    max_scale: float = 0.1  # relative


def augment(batch: torch.Tensor, training: ClassifierTraining, generator: torch.Generator) -> torch.Tensor:
    """Random affine warp of images in [-1, 1]; the uncovered border is background (-1)."""
    n, _, height, width = batch.shape
    uniform = torch.rand(n, 4, generator=generator) * 2 - 1
    angle = uniform[:, 0] * math.radians(training.max_rotation)
    scale = 1 + uniform[:, 1] * training.max_scale
    shift_x = uniform[:, 2] * training.max_shift * 2 / width  # affine_grid works in [-1, 1] coordinates
    shift_y = uniform[:, 3] * training.max_shift * 2 / height
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch + 1, grid, align_corners=False) - 1


def train_classifier(
    training: ClassifierTraining,
    out_dir: str | Path,
    arch: ClassifierArchitecture | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train, measure on the held-out split, save to ``out_dir``; returns the written config."""
    started = time.perf_counter()
    data = load_images(training.data)
    split = split_for(data, training.held_out_fraction, training.split_seed)  # a source's own splits win
    arch = arch or ClassifierArchitecture(image_shape=data.image_shape, num_classes=data.num_classes)
    model = fit(arch, data.images[split.train], data.labels[split.train], training, log)
    classifier = Classifier(model.eval(), {"architecture": architecture_dict(arch)})
    held_out = data.subset(split.held_out)
    predicted = classifier.predict_labels(held_out.images)
    per_label = [float(np.mean(predicted[held_out.labels == k] == k)) for k in range(data.num_classes)]
    accuracy = float(np.mean(predicted == held_out.labels))
    log(f"held-out accuracy {accuracy:.4f} ({len(predicted)} images), per label {np.round(per_label, 3)}")
    config = {
        "format": CONFIG_FORMAT,
        "architecture": architecture_dict(arch),
        "input": "uint8 [N, H, W, C] images mapped to float32 NCHW in [-1, 1] (train.data.to_model_range)",
        "features": f"penultimate layer: ReLU(Linear) activations, {arch.feature_dim} values per image",
        "training": asdict(training)
        | {
            "optimiser": "AdamW, one-cycle learning rate",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "data": {"source": data.source, "sha256": data.sha256, "label_names": list(data.label_names)},
        "split": split.describe(data.labels),
        "held_out_accuracy": accuracy,
        "held_out_per_label_accuracy": per_label,
        "command": command_for(training, out_dir),
    }
    save_classifier(model, config, out_dir)
    log(f"wrote {out_dir} in {time.perf_counter() - started:.0f}s")
    return config


def fit(
    arch: ClassifierArchitecture,
    images: np.ndarray,
    labels: np.ndarray,
    training: ClassifierTraining,
    log: Callable[[str], None] = print,
) -> DigitClassifier:
    """A new classifier trained on uint8 NHWC ``images``; initial weights, batch order and augmentation
    all follow ``training.seed``."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
            return _fit(arch, images, labels, training, log)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _fit(
    arch: ClassifierArchitecture,
    images: np.ndarray,
    labels: np.ndarray,
    training: ClassifierTraining,
    log: Callable[[str], None],
) -> DigitClassifier:
    torch.manual_seed(training.seed)
    model = DigitClassifier(arch)
    inputs, targets = torch.from_numpy(to_model_range(images)), torch.from_numpy(labels)
    steps_per_epoch = math.ceil(len(inputs) / training.batch_size)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=training.learning_rate, total_steps=training.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(training.seed)
    started = time.perf_counter()
    for epoch in range(1, training.epochs + 1):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        total_loss, correct = 0.0, 0
        for start in range(0, len(inputs), training.batch_size):
            index = order[start : start + training.batch_size]
            batch, target = augment(inputs[index], training, generator), targets[index]
            logits = model(batch)
            loss = F.cross_entropy(logits, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(index)
            correct += int((logits.argmax(1) == target).sum())
        log(
            f"epoch {epoch}/{training.epochs}  loss {total_loss / len(inputs):.4f}  "
            f"train acc (augmented) {correct / len(inputs):.4f}  {time.perf_counter() - started:.0f}s"
        )
    return model.eval()


def command_for(training: ClassifierTraining, out_dir: str | Path) -> str:
    defaults = ClassifierTraining()
    flags = [
        f"--{name.replace('_', '-')} {value}"
        for name, value in asdict(training).items()
        if value != getattr(defaults, name)
    ]
    return " ".join(["gan-eval train-classifier --out", str(out_dir), *flags])

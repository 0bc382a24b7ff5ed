"""Helpers for the evaluation tests: fast settings and fake generators built from real images."""

from __future__ import annotations

import numpy as np

from contracts.run_dir import write_config
from evaluation.evaluate import EvalSettings, Reference
from evaluation.sources import ImageSource
from train.checkpoint import save_generator
from train.models import Architecture, build_generator

# Small but real settings: fewer images and KID subsets than the defaults keep each evaluation near a second,
# plus one CAS epoch (about a second per CAS classifier on 1,000 images).
FAST = EvalSettings(n=1000, kid_subsets=5, kid_subset_size=500, cas_epochs=1)
LATENT_DIM = 8
FAST_FLAGS = ["--n", "500", "--kid-subsets", "3", "--kid-subset-size", "200"]  # gan-eval's, a bit smaller


def source_from(name: str, pick, reference: Reference, **details) -> ImageSource:
    """A fake generator ``pick(z, label) -> uint8 images`` that claims the classifier's data split."""
    return ImageSource(
        name=name,
        kind="test",
        latent_dim=LATENT_DIM,
        num_classes=reference.num_classes,
        image_shape=reference.train.image_shape,
        generate=pick,
        details={"path": name, "config": {"split": reference.split_description}} | details,
    )


def latent_index(z: np.ndarray, count: int) -> np.ndarray:
    """A deterministic index per latent (as if the latent chose the image)."""
    return (np.abs(z[:, 0]) * 1e6).astype(np.int64) % count


def replay(reference: Reference, frozen_labels=()):
    """Returns a real training image of the asked label, chosen by the latent; labels in ``frozen_labels``
    always get the same image (a collapsed label)."""
    by_label = [reference.train.images[reference.train.labels == k] for k in range(reference.num_classes)]

    def pick(z, label):
        index = latent_index(z, min(len(images) for images in by_label))
        chosen = [0 if k in frozen_labels else i for k, i in zip(label, index, strict=True)]
        return np.stack([by_label[k][i] for k, i in zip(label, chosen, strict=True)])

    return pick


def untrained_run_dir(path, reference: Reference):
    """A real run directory (config.json + generator.safetensors) of an untrained small cdcgan."""
    arch = Architecture(latent_dim=LATENT_DIM, width=8, embed_dim=4)
    config = {
        "model": "cdcgan",
        "conditional": True,
        "latent_dim": arch.latent_dim,
        "num_classes": arch.num_classes,
        "image_shape": list(arch.image_shape),
        "architecture": arch.kwargs(),
        "data": {"source": reference.train.source, "sha256": reference.train.sha256},
        "split": reference.split_description,
    }
    path.mkdir()
    write_config(path, config)
    save_generator(path, build_generator("cdcgan", arch))
    return path

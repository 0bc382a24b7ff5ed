"""Helpers for the evaluation tests: fast settings and fake generators built from real images."""

from __future__ import annotations

import numpy as np

from evaluation.evaluate import EvalSettings, Reference
from evaluation.sources import ImageSource

# Small but real settings: fewer images and KID subsets than the defaults keep each evaluation near a second,
# plus one CAS epoch (about a second per CAS classifier on 1,000 images).
FAST = EvalSettings(n=1000, kid_subsets=5, kid_subset_size=500, cas_epochs=1)
LATENT_DIM = 8


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

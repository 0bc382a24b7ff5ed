"""Which label each image of a bulk batch gets: exact counts per label, in a seeded order. NumPy only."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def counts_from_weights(weights: Mapping[int, float], n: int, num_classes: int) -> np.ndarray:
    """Split ``n`` images over labels in proportion to ``weights`` (largest remainder: exact total, ties go to
    the lower label)."""
    w = np.zeros(num_classes, dtype=np.float64)
    for label, weight in weights.items():
        w[label] = weight
    if w.sum() <= 0:
        raise ValueError("weights must have a positive sum")
    share = w / w.sum() * n
    counts = np.floor(share).astype(np.int64)
    remainder = n - int(counts.sum())
    order = np.lexsort((np.arange(num_classes), -(share - counts)))  # largest fraction first, then label
    counts[order[:remainder]] += 1
    return counts


def balanced_counts(n: int, num_classes: int) -> np.ndarray:
    return counts_from_weights(dict.fromkeys(range(num_classes), 1.0), n, num_classes)


def plan_labels(counts: np.ndarray, seed: int, shuffle: bool = True) -> np.ndarray:
    """``counts[k]`` copies of each label ``k`` (int64), shuffled by ``seed`` unless ``shuffle`` is off."""
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    if shuffle:
        np.random.default_rng(seed).shuffle(labels)
    return labels

"""1.2.0 learned from mnist5k; the full-MNIST classifier's test split is honest ground for it."""

from __future__ import annotations

from evaluation import evaluate as E
from train.data import load_images, split_for


def test_mnist5k_is_inside_mnist_train_so_its_generators_can_be_measured_on_mnist_test():
    # what makes 1.2.0 (trained on mnist5k) measurable on MNIST's test split with the full-MNIST classifier
    subset, full = load_images("mnist5k"), load_images("mnist")
    config = {"training": {"data": "mnist5k"}, "split": split_for(subset).describe(subset.labels)}
    seen = E.training_images(config)
    assert seen is not None and len(seen) == 4000
    assert E.shared_image_count(subset.images, full.images[full.splits["train"]]) == 5000
    assert E.shared_image_count(seen, full.images[full.splits["test"]]) == 0

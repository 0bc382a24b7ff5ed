"""The shipped domain classifier: its recorded accuracy, its input checks, and that training is repeatable."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from evaluation.classifier import ClassifierArchitecture, ClassifierError, load_classifier
from evaluation.train_classifier import ClassifierTraining, fit


def test_recorded_held_out_accuracy_matches_a_recomputation(reference):
    config = reference.classifier.config
    predicted = reference.held_out_logits.argmax(1)
    recomputed = float(np.mean(predicted == reference.held_out.labels))
    assert config["held_out_accuracy"] >= 0.98
    assert recomputed == pytest.approx(config["held_out_accuracy"], abs=0.002)  # ≤ 2 of 1000 images may flip


def test_classifier_was_trained_on_the_training_split_only(reference):
    split = reference.classifier.config["split"]
    assert split == reference.split_description
    assert split["train_count"] == len(reference.train.labels)
    assert split["held_out_count"] == len(reference.held_out.labels) > 0


def test_predict_gives_logits_and_penultimate_features(reference):
    logits, features = reference.classifier.predict(reference.held_out.images[:7])
    arch = reference.classifier.architecture
    assert logits.shape == (7, arch.num_classes) and logits.dtype == np.float32
    assert features.shape == (7, arch.feature_dim) and features.dtype == np.float32
    assert (features >= 0).all()  # ReLU activations


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 28, 28, 1), np.float32),
        np.zeros((2, 28, 28), np.uint8),
        np.zeros((2, 32, 32, 1), np.uint8),
    ],
)
def test_predict_rejects_images_of_the_wrong_type_or_shape(reference, images):
    with pytest.raises(ClassifierError, match=r"uint8 \[N, 28, 28, 1\]"):
        reference.classifier.predict(images)


def test_missing_classifier_directory_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(ClassifierError, match="gan-eval train-classifier"):
        load_classifier(tmp_path)


def test_training_is_deterministic(reference):
    images, labels = reference.train.images[::20], reference.train.labels[::20]
    training = replace(ClassifierTraining(), epochs=1)
    arch = ClassifierArchitecture(channels=(8, 16), feature_dim=16)
    first = fit(arch, images, labels, training, log=lambda _: None)
    second = fit(arch, images, labels, training, log=lambda _: None)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

"""The domain classifier evaluation measures images with: a small CNN trained on the training split only.

Its logits give label accuracy and the classifier-based Inception Score; its penultimate activations are the
feature space of FID, KID, precision/recall and the two-sample tests. Files: ``classifier.safetensors``
(weights) and ``config.json`` (architecture, training recipe, data split, held-out accuracy).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from train.data import to_model_range

WEIGHTS_FILE = "classifier.safetensors"
CONFIG_FILE = "config.json"
CONFIG_FORMAT = "gan-service/domain-classifier/v1"
DEFAULT_CLASSIFIER_DIR = Path(__file__).resolve().parents[1] / "models" / "mnist-classifier"
PREDICT_BATCH = 500


class ClassifierError(ValueError):
    """The classifier directory is missing, incomplete or does not fit the images; the message says which."""


@dataclass(frozen=True)
class ClassifierArchitecture:
    image_shape: tuple[int, int, int] = (28, 28, 1)  # H, W, C
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64, 128)  # one 3x3 conv block each, 2x2 max-pool between blocks
    feature_dim: int = 128  # penultimate layer: the feature space of the metrics
    dropout: float = 0.3

    @classmethod
    def from_dict(cls, data: dict) -> ClassifierArchitecture:
        return cls(
            image_shape=tuple(int(d) for d in data["image_shape"]),  # type: ignore[arg-type]
            num_classes=int(data["num_classes"]),
            channels=tuple(int(c) for c in data["channels"]),
            feature_dim=int(data["feature_dim"]),
            dropout=float(data["dropout"]),
        )


class DigitClassifier(nn.Module):
    """conv-BN-ReLU blocks → flatten → linear-ReLU (the features) → dropout → linear (the logits)."""

    def __init__(self, arch: ClassifierArchitecture):
        super().__init__()
        height, width, in_channels = arch.image_shape
        layers: list[nn.Module] = []
        for index, channels in enumerate(arch.channels):
            if index > 0:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            layers += [
                nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            ]
            in_channels = channels
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * height * width, arch.feature_dim), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Dropout(arch.dropout), nn.Linear(arch.feature_dim, arch.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(self.body(x)))

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(self.body(x))
        return self.head(features), features


@dataclass
class Classifier:
    """A loaded classifier: the network in eval mode plus its ``config.json``."""

    model: DigitClassifier
    config: dict

    @property
    def architecture(self) -> ClassifierArchitecture:
        return ClassifierArchitecture.from_dict(self.config["architecture"])

    def predict(self, images: np.ndarray, batch_size: int = PREDICT_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``[N, H, W, C]`` → (logits ``[N, num_classes]``, features ``[N, feature_dim]``), float32."""
        expected = tuple(self.architecture.image_shape)
        if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ClassifierError(
                f"images must be uint8 [N, {', '.join(map(str, expected))}] (NHWC), "
                f"got {images.dtype} {list(images.shape)}"
            )
        logits, features = [], []
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(to_model_range(images[start : start + batch_size]))
                batch_logits, batch_features = self.model.logits_and_features(batch)
                logits.append(batch_logits.numpy())
                features.append(batch_features.numpy())
        if not logits:
            arch = self.architecture
            return np.zeros((0, arch.num_classes), np.float32), np.zeros((0, arch.feature_dim), np.float32)
        return np.concatenate(logits), np.concatenate(features)

    def predict_labels(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)[0].argmax(axis=1)


def save_classifier(model: DigitClassifier, config: dict, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": CONFIG_FORMAT})
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_classifier(directory: str | Path = DEFAULT_CLASSIFIER_DIR) -> Classifier:
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ClassifierError(
                f"classifier file not found: {path} "
                f"(make it with `gan-eval train-classifier --out {directory}`)"
            )
    try:
        config = json.loads(config_path.read_text())
        arch = ClassifierArchitecture.from_dict(config["architecture"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ClassifierError(f"{config_path}: not a classifier config ({exc!r})") from exc
    model = DigitClassifier(arch)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except Exception as exc:  # safetensors and torch raise several types for a damaged or mismatched file
        raise ClassifierError(
            f"{weights_path}: weights do not fit the architecture in {config_path} ({exc})"
        ) from exc
    return Classifier(model.eval(), config)


def architecture_dict(arch: ClassifierArchitecture) -> dict:
    data = asdict(arch)
    data["image_shape"], data["channels"] = list(arch.image_shape), list(arch.channels)
    return data

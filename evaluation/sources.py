"""Where evaluated images come from: a training run directory (PyTorch) or an exported model directory
(ONNX Runtime), behind one small interface. Latents follow the service's seed scheme, so a reported number
can be reproduced image by image through the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contracts.latents import request_latents
from contracts.model_dir import MANIFEST_FILE, MODEL_FILE, ModelDirError, read_manifest, verified_graph
from contracts.run_dir import CONFIG_FILE, GENERATOR_FILE, is_run_dir
from train.data import to_uint8

GENERATE_BATCH = 500


class SourceError(ValueError):
    """The path is not a run or model directory, or its files are inconsistent; the message says which."""


@dataclass
class ImageSource:
    """A conditional generator seen from outside: latents and labels in, uint8 NHWC images out."""

    name: str
    kind: str  # "run" | "model" | anything a caller wraps
    latent_dim: int
    num_classes: int
    image_shape: tuple[int, int, int]
    generate: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (z float32 [N, D], label int64 [N]) -> uint8
    conditional: bool = True  # False: the generator ignores its label, so label metrics measure nothing
    details: dict = field(default_factory=dict)  # recorded in metrics.json (config / manifest excerpts)


def open_source(path: str | Path) -> ImageSource:
    path = Path(path)
    if not path.is_dir():
        raise SourceError(f"{path}: not a directory (expected a run directory or a model directory)")
    if (path / MANIFEST_FILE).is_file():
        return _model_source(path)
    if is_run_dir(path):
        return _run_source(path)
    raise SourceError(
        f"{path}: neither a model directory ({MANIFEST_FILE} + {MODEL_FILE}) "
        f"nor a run directory ({CONFIG_FILE} + {GENERATOR_FILE})"
    )


def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    """Image ``i`` is made for label ``i mod num_classes``: every label gets ``n / num_classes`` (± 1)."""
    return (np.arange(n) % num_classes).astype(np.int64)


def generate_balanced(
    source: ImageSource, n: int, seed: int = 0, truncation: float = 1.0, batch_size: int = GENERATE_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images from latents ``request_latents(seed, n)``, labels cycling through all classes."""
    if n < source.num_classes:
        raise ValueError(f"n must be at least the number of classes ({source.num_classes}), got {n}")
    latents = request_latents(seed, n, source.latent_dim, truncation)
    labels = balanced_labels(n, source.num_classes)
    images = [
        source.generate(latents[start : start + batch_size], labels[start : start + batch_size])
        for start in range(0, n, batch_size)
    ]
    out = np.concatenate(images)
    expected = (n, *source.image_shape)
    if out.dtype != np.uint8 or out.shape != expected:
        raise SourceError(
            f"{source.name}: generated {out.dtype} {list(out.shape)}, expected uint8 {list(expected)}"
        )
    return out, labels


def _run_source(run_dir: Path) -> ImageSource:
    import torch

    from train.checkpoint import load_generator  # the trainer's loader; imported only when a run is evaluated

    generator, config = load_generator(run_dir)
    generator.eval()

    def generate(z: np.ndarray, label: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return to_uint8(generator(torch.from_numpy(z), torch.from_numpy(label)).numpy())

    try:
        return ImageSource(
            name=run_dir.name,
            kind="run",
            latent_dim=int(config["latent_dim"]),
            num_classes=int(config["num_classes"]),
            image_shape=tuple(int(d) for d in config["image_shape"]),  # type: ignore[arg-type]
            generate=generate,
            conditional=bool(config.get("conditional", True)),
            details={"path": str(run_dir), "config": config},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"{run_dir / CONFIG_FILE}: missing or bad field ({exc!r})") from exc


def _model_source(model_dir: Path) -> ImageSource:
    import onnxruntime as ort

    try:
        manifest = read_manifest(model_dir)
        onnx_path = verified_graph(model_dir, manifest.graph())
    except ModelDirError as exc:
        raise SourceError(str(exc)) from exc
    latent_name, label_name = manifest.inputs["latent"], manifest.inputs["label"]
    output_name = manifest.output.name
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def generate(z: np.ndarray, label: np.ndarray) -> np.ndarray:
        (images,) = session.run([output_name], {latent_name: z, label_name: label})
        return images

    return ImageSource(
        name=manifest.name,
        kind="model",
        latent_dim=manifest.latent_dim,
        num_classes=manifest.num_classes,
        image_shape=manifest.image_shape,
        generate=generate,
        conditional=manifest.conditional,
        details={
            "path": str(model_dir),
            "version": manifest.version,
            "sha256": manifest.sha256,
            "training": manifest.training,
            "data_split": manifest.data_split,
        },
    )

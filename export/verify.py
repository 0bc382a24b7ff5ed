"""Parity between an exported graph (ONNX Runtime, CPU) and the PyTorch module it came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from contracts.latents import latents_for_seeds
from contracts.model_dir import IMAGE_OUTPUT
from export.graph import DEBUG_OUTPUT

VERIFY_BATCH_SIZES = (1, 7, 64)
IMAGE_TOLERANCE = 1  # uint8 levels: float rounding differences may flip a value sitting on a .5 boundary
FLOAT_TOLERANCE = 1e-4  # generator output, in [-1, 1]
FP16_IMAGE_TOLERANCE = 2  # the float16 graph against the float32 PyTorch model
# The float error that moves a pixel by at most FP16_IMAGE_TOLERANCE levels ([-1, 1] spans 255 levels)
FP16_FLOAT_TOLERANCE = FP16_IMAGE_TOLERANCE * 2 / 255
VERIFY_SEED = 0
PROVIDER = "CPUExecutionProvider"
GPU_PROVIDER = "CUDAExecutionProvider"

Inputs = tuple[np.ndarray, np.ndarray]


class VerificationError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond tolerance; the message gives the numbers."""


@dataclass(frozen=True)
class Tolerance:
    image: int = IMAGE_TOLERANCE
    float: float = FLOAT_TOLERANCE


def session(model: onnx.ModelProto | str, provider: str = PROVIDER) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=[provider])


def gpu_available() -> bool:
    return GPU_PROVIDER in ort.get_available_providers()


def label_inputs(latent_dim: int, num_classes: int) -> Callable[[int], Inputs]:
    """Batch ``n``: the service's latents of seeds ``VERIFY_SEED..+n``; labels cycle through the classes."""

    def make(n: int) -> Inputs:
        z = latents_for_seeds(range(VERIFY_SEED, VERIFY_SEED + n), latent_dim)
        return z, (np.arange(n, dtype=np.int64) % num_classes)

    return make


def weight_inputs(latent_dim: int, num_classes: int) -> Callable[[int], Inputs]:
    """Batch ``n``: the same latents and random convex label mixes (fixed seed)."""

    def make(n: int) -> Inputs:
        z = latents_for_seeds(range(VERIFY_SEED, VERIFY_SEED + n), latent_dim)
        weights = (
            np.random.default_rng(VERIFY_SEED).dirichlet(np.ones(num_classes), size=n).astype(np.float32)
        )
        return z, weights

    return make


def check_parity(
    graph: ort.InferenceSession,
    reference: nn.Module,
    make_inputs: Callable[[int], Inputs],
    what: str,
    tolerance: Tolerance = Tolerance(),
    batch_sizes: tuple[int, ...] = VERIFY_BATCH_SIZES,
) -> dict:
    """Run both on the same inputs at each batch size; raise ``VerificationError`` beyond tolerance.

    ``reference`` returns ``(image, float_output)``; the float output is compared when the graph exposes it
    (the debug variant) and reported as ``None`` otherwise.
    """
    names = [i.name for i in graph.get_inputs()]
    outputs = [o.name for o in graph.get_outputs()]
    image_diffs: list[int] = []
    float_diffs: list[float] = []
    for n in batch_sizes:
        first, second = make_inputs(n)
        results = dict(zip(outputs, graph.run(outputs, {names[0]: first, names[1]: second}), strict=True))
        with torch.no_grad():
            want_image, want_float = reference.eval()(torch.from_numpy(first), torch.from_numpy(second))
        image = results[IMAGE_OUTPUT]
        if image.shape != tuple(want_image.shape) or image.dtype != np.uint8:
            raise VerificationError(
                f"{what}: batch {n}: graph gives {image.dtype} {image.shape}, "
                f"PyTorch {tuple(want_image.shape)}"
            )
        image_diffs.append(int(np.abs(image.astype(np.int16) - want_image.numpy().astype(np.int16)).max()))
        if DEBUG_OUTPUT in results:
            float_diffs.append(float(np.abs(results[DEBUG_OUTPUT] - want_float.numpy()).max()))
    report = {
        "batch_sizes": list(batch_sizes),
        "image_max_abs_diff": max(image_diffs),
        "image_tolerance": tolerance.image,
        "float_max_abs_diff": max(float_diffs) if float_diffs else None,
        "float_tolerance": tolerance.float if float_diffs else None,
    }
    for n, diff in zip(batch_sizes, image_diffs, strict=True):
        if diff > tolerance.image:
            raise VerificationError(
                f"{what}: uint8 output differs from PyTorch by {diff} levels at batch size {n} "
                f"(tolerance {tolerance.image})"
            )
    for n, diff in zip(batch_sizes, float_diffs, strict=False):  # empty when the graph has no float output
        if diff > tolerance.float:
            raise VerificationError(
                f"{what}: float output differs from PyTorch by {diff:.3g} at batch size {n} "
                f"(tolerance {tolerance.float:g})"
            )
    return report


def check_same_images(
    first: ort.InferenceSession,
    second: ort.InferenceSession,
    make_first: Callable[[int], Inputs],
    to_second: Callable[[Inputs], Inputs],
    what: str,
    tolerance: int = IMAGE_TOLERANCE,
) -> int:
    """Two graphs that should agree (e.g. ``model.onnx`` with labels and ``label_morph.onnx`` with one-hot
    weights): the max uint8 difference over the verification batch sizes."""
    worst = 0
    for n in VERIFY_BATCH_SIZES:
        inputs = make_first(n)
        a = _run_image(first, inputs)
        b = _run_image(second, to_second(inputs))
        worst = max(worst, int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()))
    if worst > tolerance:
        raise VerificationError(f"{what}: the graphs differ by {worst} levels (tolerance {tolerance})")
    return worst


def _run_image(graph: ort.InferenceSession, inputs: Inputs) -> np.ndarray:
    names = [i.name for i in graph.get_inputs()]
    return graph.run([IMAGE_OUTPUT], dict(zip(names, inputs, strict=True)))[0]

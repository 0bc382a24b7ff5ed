"""``gan-train-encoder``: train the projection encoder against a model's frozen generator and add it to the
model directory (``encoder.onnx`` + the manifest's ``encoder`` entry).

    gan-train-encoder models/mnist-cdcgan --out models/mnist-cdcgan          # ONNX generator as data source
    gan-train-encoder runs/full-v2 --out models/mnist-cdcgan --pixel-weight 1  # + pixel loss through G

The source is a run directory (the PyTorch generator: a pixel loss through it is possible) or a model
directory (its ONNX generator: latent loss only). Either way the generator must be the one ``--out`` serves:
both are run on the same latents first and must agree. The graph is verified against PyTorch as
``export.verify`` does for the generator, then ``encoder.onnx`` and the manifest are replaced atomically
(the rest of the model directory is left as it is). One thread, deterministic by ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

from contracts.files import atomic_path, atomic_write_text, sha256_file
from contracts.latents import latents_for_seeds
from contracts.model_dir import (
    CARD_FILE,
    ENCODER_FILE,
    IMAGE_INPUT,
    LABEL_INPUT,
    LATENT_OUTPUT,
    MANIFEST_FILE,
    ModelDirError,
    read_manifest,
    write_manifest,
)
from contracts.run_dir import is_run_dir
from evaluation.sources import ImageSource, open_source
from export.card import with_encoder_line
from export.graph import DEFAULT_OPSET, export_onnx, to_image
from export.graph_check import verify_model_dir
from export.verify import FLOAT_TOLERANCE, IMAGE_TOLERANCE, VERIFY_BATCH_SIZES, VERIFY_SEED, session
from train.encoder import (
    EncoderConfig,
    ImageEncoder,
    add_encoder_arguments,
    latent_recovery,
    positive_int,
    train_encoder,
)
from train.models import Architecture

EXIT_BAD_INPUT = 2
FOLDED = ("input.embed.weight", "project.weight", "project.weight_bias", "up1.weight", "up1.weight_bias")


class FoldedDCGenerator(torch.nn.Module):
    """The conditional DCGAN generator rebuilt from its exported graph, where the exporter folded each batch
    norm into the layer before it: embed → Linear → ReLU → ConvT → ReLU → ConvT → tanh, float output.

    Lets a model directory without its run directory (the torch weights) still give the pixel loss a
    differentiable generator; trusted only once ``same_generator`` finds its images equal to the graph's."""

    def __init__(self, weights: dict[str, torch.Tensor], image_shape: tuple[int, int, int]):
        super().__init__()
        for name, tensor in weights.items():
            self.register_buffer(name.replace(".", "_"), tensor)
        self.base = (self.up1_weight.shape[0], image_shape[0] // 4, image_shape[1] // 4)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        embedding = self.input_embed_weight[label]
        h = torch.relu(torch.cat([z, embedding], 1) @ self.project_weight.T + self.project_weight_bias)
        h = F.conv_transpose2d(h.view(-1, *self.base), self.up1_weight, self.up1_weight_bias, 2, 1)
        return torch.tanh(F.conv_transpose2d(torch.relu(h), self.up2_weight, self.up2_bias, 2, 1))


def folded_generator(model_dir: Path) -> FoldedDCGenerator | None:
    """``FoldedDCGenerator`` from a model directory's ``model.onnx``, or None when its weights are not the
    conditional DCGAN's (another architecture: train with the latent loss only, or from its run directory)."""
    manifest = read_manifest(model_dir)
    graph = onnx.load(str(model_dir / manifest.file))
    found = {i.name.removeprefix("generator."): i for i in graph.graph.initializer}
    names = (*FOLDED, "up2.weight", "up2.bias")
    if not all(name in found for name in names):
        return None
    weights = {name: torch.from_numpy(onnx.numpy_helper.to_array(found[name]).copy()) for name in names}
    return FoldedDCGenerator(weights, manifest.image_shape).eval()


def same_generator(source: ImageSource, served: ImageSource, n: int = 64) -> int:
    """The max uint8 difference between two generators on the same latents; raises when they differ."""
    z = latents_for_seeds(range(VERIFY_SEED, VERIFY_SEED + n), source.latent_dim)
    label = (np.arange(n) % source.num_classes).astype(np.int64)
    diff = int(np.abs(source.generate(z, label).astype(np.int16) - served.generate(z, label)).max())
    if diff > IMAGE_TOLERANCE:
        raise ModelDirError(
            f"{source.name} and the model served from {served.details['path']} are different generators "
            f"(images differ by {diff} levels on the same latents): train the encoder against the run or "
            "model directory that model was exported from"
        )
    return diff


def check_encoder_parity(graph_path: Path, encoder: ImageEncoder, source: ImageSource) -> dict:
    """ONNX Runtime vs PyTorch on generated images at each verification batch size (latent max abs diff)."""
    graph = session(str(graph_path))
    diffs = []
    for n in VERIFY_BATCH_SIZES:
        z = latents_for_seeds(range(VERIFY_SEED, VERIFY_SEED + n), source.latent_dim)
        label = (np.arange(n) % source.num_classes).astype(np.int64)
        images = source.generate(z, label)
        (got,) = graph.run([LATENT_OUTPUT], {IMAGE_INPUT: images, LABEL_INPUT: label})
        with torch.inference_mode():
            want = encoder(torch.from_numpy(images), torch.from_numpy(label)).numpy()
        if got.shape != want.shape or got.dtype != np.float32:
            raise ModelDirError(
                f"{ENCODER_FILE}: batch {n}: graph gives {got.dtype} {got.shape}, want {want.shape}"
            )
        diffs.append(float(np.abs(got - want).max()))
        if diffs[-1] > FLOAT_TOLERANCE:
            raise ModelDirError(
                f"{ENCODER_FILE}: latent differs from PyTorch by {diffs[-1]:.3g} at batch size {n} "
                f"(tolerance {FLOAT_TOLERANCE:g})"
            )
    return {
        "batch_sizes": list(VERIFY_BATCH_SIZES),
        "latent_max_abs_diff": max(diffs),
        "latent_tolerance": FLOAT_TOLERANCE,
    }


def pixel_generator(source_dir: Path, source: ImageSource) -> nn.Module:
    """A differentiable copy of the source's generator: the run's PyTorch generator, or for a model directory
    the graph's weights in ``FoldedDCGenerator`` (checked image for image against the graph)."""
    if is_run_dir(source_dir):
        from train.checkpoint import load_generator

        return load_generator(source_dir)[0]
    folded = folded_generator(source_dir)
    if folded is None:
        raise ValueError(
            f"--pixel-weight: {source_dir} is a model directory whose graph is not a conditional DCGAN's; "
            "give its run directory (the PyTorch generator) instead"
        )

    def generate(z: np.ndarray, label: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = folded(torch.from_numpy(z), torch.from_numpy(label))
        return to_image(x).numpy()

    same_generator(replace(source, name="FoldedDCGenerator", generate=generate), source)
    return folded


def add_encoder(source_dir: Path, model_dir: Path, config: EncoderConfig, log=print) -> dict:
    """Train, export, verify and install the encoder; returns the manifest's new ``encoder`` entry."""
    manifest = read_manifest(model_dir, complete=True)
    source, served = open_source(source_dir), open_source(model_dir)
    for name in ("latent_dim", "num_classes", "image_shape"):
        if getattr(source, name) != getattr(served, name):
            raise ModelDirError(
                f"{source_dir} has {name} {getattr(source, name)}, the model in {model_dir} "
                f"{getattr(served, name)}: the encoder must be trained against the generator it serves"
            )
    same_generator(source, served)
    if not manifest.conditional:
        raise ModelDirError(f"{model_dir}: the encoder needs a conditional model (it takes the label)")
    arch = Architecture(
        latent_dim=manifest.latent_dim, num_classes=manifest.num_classes, image_shape=manifest.image_shape
    )
    generator = None
    if config.pixel_weight > 0:
        generator = pixel_generator(source_dir, source)
    encoder, trained = train_encoder(source.generate, arch, config, generator, log=log)
    example = (
        torch.zeros((2, *manifest.image_shape), dtype=torch.uint8),
        torch.arange(2, dtype=torch.int64) % manifest.num_classes,
    )
    graph = export_onnx(encoder, example, (IMAGE_INPUT, LABEL_INPUT), DEFAULT_OPSET, (LATENT_OUTPUT,))
    with atomic_path(model_dir / ENCODER_FILE) as tmp:
        onnx.save(graph, tmp)
        verification = check_encoder_parity(tmp, encoder, source)
        sha256 = sha256_file(tmp)
    # the file first, then the manifest naming it: a reader sees the old manifest or the complete new pair
    # (only a re-run, replacing an encoder, leaves a moment where the old entry names a replaced file)
    entry = {
        "file": ENCODER_FILE,
        "sha256": sha256,
        "inputs": {"image": IMAGE_INPUT, "label": LABEL_INPUT},
        "output": LATENT_OUTPUT,
        "source": {"kind": source.kind, "name": source.name, "generator_sha256": manifest.sha256},
        "training": {**config.to_dict(), **trained},
        "verification": verification,
        "recovery": latent_recovery(encoder, served.generate, arch),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    raw = json.loads((model_dir / MANIFEST_FILE).read_text())
    raw["encoder"] = entry
    write_manifest(model_dir, raw)
    card_path = model_dir / CARD_FILE
    if card_path.is_file():  # the card lists the new file (the rest of it is the export's)
        atomic_write_text(card_path, with_encoder_line(card_path.read_text(), entry, raw))
    verify_model_dir(model_dir)
    return entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-train-encoder",
        description="Train the projection encoder (image, label -> latent) against a frozen generator and "
        "add encoder.onnx + the manifest's `encoder` entry to a model directory.",
    )
    parser.add_argument("source", type=Path, help="run directory (PyTorch generator) or model directory")
    parser.add_argument("--out", type=Path, required=True, help="model directory to add the encoder to")
    add_encoder_arguments(parser)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    config = EncoderConfig(**{f.name: getattr(args, f.name) for f in fields(EncoderConfig)})
    try:
        entry = add_encoder(args.source, args.out, config)
    except (ValueError, OSError) as exc:
        print(f"gan-train-encoder: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{args.out / ENCODER_FILE}: sha256 {entry['sha256'][:12]}…, parity "
        f"{entry['verification']['latent_max_abs_diff']:.2g}, recovery {entry['recovery']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

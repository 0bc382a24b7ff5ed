"""GAN inversion: an encoder ``(image, label) → latent`` trained against a frozen generator.

The generator is only a data source here: it turns random ``(z, label)`` into images, and the encoder learns
to give ``z`` back (Zhu et al., 2016, "Generative Visual Manipulation": an encoder as the fast initial guess
of a projection). The images reach the encoder as the service sees them, uint8 NHWC, so the graph exported
from ``ImageEncoder`` takes the same bytes the generator's graph gives. With a differentiable generator a
pixel loss is added: ``|G(E(x), y) - x|``, back-propagated through the frozen generator.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from train.models import LEAK, Architecture, _quarter

# (z float32 [N, D], label int64 [N]) -> uint8 images [N, H, W, C]: any generator seen from outside
GenerateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's architecture and training; recorded in the manifest's ``encoder.training``."""

    width: int = 32  # channels of the first convolution (the second has 2 * width)
    embed_dim: int = 16  # label embedding concatenated to the image features
    hidden: int = 512
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    # weight of |G(E(x), y) - x| (needs a differentiable generator); 0: latent loss only. On the shipped model
    # it took the pixel error of G(E(G(z))) from 0.041 (latent loss, 250 steps of 128) to 0.026
    pixel_weight: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """Raise ValueError naming the first setting out of its range (``ENCODER_OPTIONS``)."""
        for field in fields(self):
            _, kind = ENCODER_OPTIONS[field.name]
            try:
                kind(str(getattr(self, field.name)))
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"{field.name}: {exc}") from exc


def _int_at_least(least: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")  # argparse type
non_negative_int = _int_at_least(0, "an integer of at least 0")  # argparse type: a seed


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number of at least 0."""
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


# EncoderConfig field → (help, argparse type); its flag is --field-name, its default the field's.
ENCODER_OPTIONS: dict[str, tuple[str, Callable[[str], int | float]]] = {
    "width": ("channels of the first convolution; the second has twice as many", positive_int),
    "embed_dim": ("size of the label embedding joined to the image features", positive_int),
    "hidden": ("units of the hidden layer before the latent", positive_int),
    "steps": ("training steps, each on a fresh batch from the generator", positive_int),
    "batch_size": ("generated images per step", positive_int),
    "lr": ("Adam learning rate (cosine-annealed to 0 over the steps)", positive_float),
    "pixel_weight": (
        "weight of the pixel loss |G(E(x), y) - x| (needs a run directory as source); 0: latent loss only",
        non_negative_float,
    ),
    "seed": ("seed of the latents, labels and initial weights", non_negative_int),
}


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare one validated option per ``EncoderConfig`` field, with its help and default: a bad value is
    argparse's one-line error (exit 2) before any work."""
    defaults = EncoderConfig()
    for field in fields(EncoderConfig):
        help_text, kind = ENCODER_OPTIONS[field.name]
        default = getattr(defaults, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"), type=kind, default=default, help=f"{help_text} ({default})"
        )


class ImageEncoder(nn.Module):
    """uint8 ``[N, H, W, C]`` + int64 label ``[N]`` → float32 latent ``[N, latent_dim]``.

    Pre-processing lives in the graph, the inverse of the generator's (``train.data.to_uint8``):
    ``x = image / 127.5 - 1``, NHWC → NCHW.
    """

    def __init__(self, arch: Architecture, config: EncoderConfig):
        super().__init__()
        quarter_h, quarter_w = _quarter(arch)
        width = config.width
        self.features = nn.Sequential(
            nn.Conv2d(arch.channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(LEAK),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(LEAK),
            nn.Flatten(),
        )
        self.embed = nn.Embedding(arch.num_classes, config.embed_dim)
        self.head = nn.Sequential(
            nn.Linear(2 * width * quarter_h * quarter_w + config.embed_dim, config.hidden),
            nn.LeakyReLU(LEAK),
            nn.Linear(config.hidden, arch.latent_dim),
        )

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0
        return self.head(torch.cat([self.features(x), self.embed(label)], dim=1))


def train_encoder(
    generate: GenerateFn,
    arch: Architecture,
    config: EncoderConfig,
    generator: nn.Module | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[ImageEncoder, dict]:
    """Train on fresh ``(z, label, G(z, label))`` every step (no fixed set to over-fit); deterministic by
    ``config.seed`` on one thread. ``generator`` (the PyTorch generator behind ``generate``, float output in
    [-1, 1]) is needed only for ``pixel_weight > 0``. Returns the encoder (eval mode) and a summary."""
    config.check()
    if config.pixel_weight > 0 and generator is None:
        raise ValueError(
            "pixel_weight > 0 needs the PyTorch generator (a run directory, not a model directory)"
        )
    torch.manual_seed(config.seed)
    rng = torch.Generator().manual_seed(config.seed)
    encoder = ImageEncoder(arch, config)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.steps)
    if generator is not None:
        generator.eval().requires_grad_(False)
    started, recent = time.monotonic(), []
    for step in range(1, config.steps + 1):
        z = torch.randn(config.batch_size, arch.latent_dim, generator=rng)
        label = torch.randint(0, arch.num_classes, (config.batch_size,), generator=rng)
        image = torch.from_numpy(generate(z.numpy(), label.numpy()))
        z_hat = encoder(image, label)
        loss = nn.functional.mse_loss(z_hat, z)
        if config.pixel_weight > 0:
            target = image.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0
            loss = loss + config.pixel_weight * (generator(z_hat, label) - target).abs().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        recent.append(loss.item())
        if log is not None and (step % 250 == 0 or step == config.steps):
            log(
                f"step {step}/{config.steps}: loss {np.mean(recent):.4f} ({time.monotonic() - started:.0f} s)"
            )
            recent = []
    encoder.eval()
    return encoder, {"steps": config.steps, "seconds": round(time.monotonic() - started, 1)}


def latent_recovery(
    encoder: ImageEncoder, generate: GenerateFn, arch: Architecture, n: int = 512, seed: int = 12345
) -> dict:
    """On generated images of latents the encoder never saw: mean squared latent error (the prior's own
    variance is 1, so 1.0 means nothing recovered) and the mean absolute pixel error of ``G(E(G(z)))`` vs
    ``G(z)`` in [0, 1] units."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, arch.latent_dim), dtype=np.float32)
    label = (np.arange(n) % arch.num_classes).astype(np.int64)
    images = generate(z, label)
    with torch.inference_mode():
        z_hat = encoder(torch.from_numpy(images), torch.from_numpy(label)).numpy()
    again = generate(z_hat, label)
    return {
        "images": n,
        "latent_mse": round(float(np.mean((z_hat - z) ** 2)), 4),
        "pixel_mae": round(float(np.mean(np.abs(again.astype(np.float32) - images) / 255)), 4),
    }

"""Differentiable augmentation of everything the discriminator sees (Zhao et al., 2020, "DiffAugment").

With a few thousand training images the discriminator memorises them; augmenting real *and* generated
images the same way, differentiably, keeps it honest without the generator learning the augmentation.
Images are float ``[N, C, H, W]`` in [-1, 1] where -1 is the background.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

TRANSLATION_FRACTION = 0.125  # shift by up to 1/8 of the side (3 px at 28)
CUTOUT_FRACTION = 0.5  # erase a square of half the side


def translation(x: torch.Tensor, fraction: float = TRANSLATION_FRACTION) -> torch.Tensor:
    """Shift each image by a random whole number of pixels, filling with background."""
    n, _, height, width = x.shape
    max_dy, max_dx = round(height * fraction), round(width * fraction)
    dy = torch.randint(-max_dy, max_dy + 1, (n,)).to(x.device).float() * 2 / height
    dx = torch.randint(-max_dx, max_dx + 1, (n,)).to(x.device).float() * 2 / width
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2], theta[:, 1, 2] = -dx, -dy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False) - 1.0


def cutout(x: torch.Tensor, fraction: float = CUTOUT_FRACTION) -> torch.Tensor:
    """Erase one random square per image to background."""
    n, _, height, width = x.shape
    size_y, size_x = max(1, round(height * fraction)), max(1, round(width * fraction))
    top = torch.randint(-(size_y // 2), height - size_y // 2, (n, 1, 1)).to(x.device)
    left = torch.randint(-(size_x // 2), width - size_x // 2, (n, 1, 1)).to(x.device)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    keep = (~inside).unsqueeze(1).to(x.dtype)
    return (x + 1.0) * keep - 1.0


AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "translation": translation,
    "cutout": cutout,
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation,cutout"`` → names, checked; ``""`` or ``"none"`` → no augmentation."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip() and p.strip() != "none")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation {unknown}; choose from {sorted(AUGMENTATIONS)} (comma-separated)"
        )
    return names


def augment(x: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    for name in names:
        x = AUGMENTATIONS[name](x)
    return x

"""The sample grid of a model directory, rendered by the exported graph itself (what the service serves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from contracts.latents import latents_for_seeds
from contracts.model_dir import IMAGE_OUTPUT

DEFAULT_SAMPLE_SEEDS = tuple(range(10))
PAD = 2  # pixels between cells


def sample_grid(
    graph: ort.InferenceSession,
    latent_dim: int,
    num_classes: int,
    seeds: tuple[int, ...] = DEFAULT_SAMPLE_SEEDS,
    conditional: bool = True,
) -> np.ndarray:
    """uint8 ``[rows * (H + PAD) + PAD, cols * (W + PAD) + PAD, C]`` with ``num_classes`` rows.

    Conditional: row = label, column = the latent of a seed (the service's seed → latent mapping), so a column
    shows one latent under every label. Unconditional (labels are ignored): cell (r, c) uses seed
    ``seeds[c] + r * len(seeds)``, as the trainer's sample grids do.
    """
    rows = np.arange(num_classes, dtype=np.int64)
    if conditional:
        z = np.tile(latents_for_seeds(seeds, latent_dim), (num_classes, 1))
    else:
        z = latents_for_seeds([seed + r * len(seeds) for r in rows for seed in seeds], latent_dim)
    labels = np.repeat(rows, len(seeds))
    names = [i.name for i in graph.get_inputs()]
    images = graph.run([IMAGE_OUTPUT], {names[0]: z, names[1]: labels})[0]
    _, height, width, channels = images.shape
    grid = np.zeros(
        (num_classes * (height + PAD) + PAD, len(seeds) * (width + PAD) + PAD, channels), dtype=np.uint8
    )
    for index, image in enumerate(images):
        row, col = divmod(index, len(seeds))
        top, left = PAD + row * (height + PAD), PAD + col * (width + PAD)
        grid[top : top + height, left : left + width] = image
    return grid


def save_grid(grid: np.ndarray, path: str | Path) -> None:
    pixels = grid[..., 0] if grid.shape[2] == 1 else grid
    Image.fromarray(pixels).save(path)

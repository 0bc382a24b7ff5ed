"""What a run leaves for people to look at: sample grids, the loss plot and the JSONL log."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt

GRID_PADDING = 2
GRID_BACKGROUND = 255
PLOT_DPI = 80


def image_grid(images: np.ndarray, rows: int, padding: int = GRID_PADDING) -> Image.Image:
    """uint8 ``[rows * cols, H, W, C]`` (row-major) → one picture with a light gap between images."""
    n, height, width, channels = images.shape
    cols = n // rows
    canvas = np.full(
        (rows * (height + padding) + padding, cols * (width + padding) + padding, channels),
        GRID_BACKGROUND,
        dtype=np.uint8,
    )
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        canvas[top : top + height, left : left + width] = images[i]
    return Image.fromarray(canvas[..., 0] if channels == 1 else canvas)


def save_grid(path: Path, images: np.ndarray, rows: int, scale: int = 1) -> None:
    grid = image_grid(images, rows)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


class JsonlLog:
    """Append-only log, one JSON object per line; ``truncate_after(step)`` drops lines a crash left behind."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def plot_losses(path: Path, records: list[dict], keys: tuple[str, ...]) -> None:
    """Loss curves from the per-step records of the log."""
    steps = [r for r in records if r.get("event") == "step"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in steps if key in r]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if ax.lines:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.96)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)

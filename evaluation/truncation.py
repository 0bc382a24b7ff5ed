"""``gan-eval truncation``: what the service's ``truncation`` parameter trades, measured.

The service scales every latent by ``truncation`` (``contracts.latents.truncate``): below 1 the images move
towards the generator's typical digit of each label. This measures one generator at several levels with the
same images, classifier and real floor as ``gan-eval`` (held-out split by default), so a user can see what a
level buys in label accuracy and density and costs in recall, coverage and CAS before asking for it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from contracts.latents import latents_for_seeds, truncate
from evaluation.choose import METRIC_FORMATS, SHOWN, model_figures
from evaluation.evaluate import (
    PARTS,
    EvalSettings,
    ProductBar,
    Reference,
    default_count,
    evaluate_source,
    portable_path,
    real_floor,
)
from evaluation.sources import ImageSource
from train.artifacts import PLOT_DPI, image_grid

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SWEEP_FILE = "truncation.json"
SWEEP_REPORT = "truncation.md"
SWEEP_PLOT = "truncation.png"
SWEEP_SAMPLES = "truncation-samples.png"
DEFAULT_LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
SAMPLE_SCALE = 2  # the picture: column c is label c with the evaluation's latent seed + c, one row per level
LABEL_MARGIN = 40  # pixels left of the picture's rows for their level
# metrics shown beside the real floor, as ratios (1 = the floor; density above 1 means crowding dense modes)
FLOOR_RATIOS = ("label_accuracy", "precision", "recall", "density", "coverage", "cas")
SOURCE_KEYS = ("path", "version", "sha256")  # of ImageSource.details: what the report names the generator by


def parse_levels(text: str) -> tuple[float, ...]:
    """``"1,0.8,0.6"`` → (1.0, 0.8, 0.6); each in (0, 1], no repeats, in the order given."""
    try:
        levels = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise ValueError(f"--levels must be comma-separated numbers in (0, 1], got '{text}'") from exc
    bad = [level for level in levels if not 0.0 < level <= 1.0]
    if bad or len(set(levels)) != len(levels):
        raise ValueError(f"--levels must be distinct numbers in (0, 1], got '{text}'")
    return levels


def sweep(
    source: ImageSource,
    reference: Reference,
    settings: EvalSettings,
    levels: tuple[float, ...],
    progress: bool = True,
) -> dict:
    n = default_count(settings, reference)
    settings = replace(settings, n=n)
    rows = []
    for level in tqdm(levels, desc="truncation", unit="level", disable=None if progress else True):
        result = evaluate_source(source, reference, replace(settings, truncation=level), ProductBar()).result
        passed = result["product_bar"]["passed"]
        rows.append({"truncation": level, "model": model_figures(result), "product_bar": passed})
        if progress:
            tqdm.write(f"truncation {level:g}: " + ", ".join(_cells(rows[-1], result["real_floor"])[1:4]))
    floor = real_floor(reference, n, settings)  # one floor for every level, cached by the first
    return {
        "source": {"name": source.name, **{k: v for k, v in source.details.items() if k in SOURCE_KEYS}},
        "part": settings.part,
        "settings": {k: v for k, v in asdict(settings).items() if k != "truncation"},
        "classifier": portable_path(reference.classifier_dir),
        "real_floor": {key: floor[key] for key in ("fid", *FLOOR_RATIOS)},
        "rows": rows,
    }


def _cells(row: dict, floor: dict) -> list[str]:
    model = row["model"]
    cells = [f"{row['truncation']:g}"]
    cells += [METRIC_FORMATS[name](model) for name in SHOWN]
    cells.append(f"{model['fid'] / floor['fid']:.2f}×")
    cells.append(f"{100 * (floor['cas'] - model['cas']):.2f}")
    return cells


def table(sweep_result: dict) -> str:
    header = ["truncation", *SHOWN, "FID / floor", "CAS gap (floor − model, points)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    floor = sweep_result["real_floor"]
    lines += ["| " + " | ".join(_cells(row, floor)) + " |" for row in sweep_result["rows"]]
    return "\n".join(lines)


def plot(sweep_result: dict, path: Path) -> None:
    rows = sorted(sweep_result["rows"], key=lambda row: row["truncation"])
    floor = sweep_result["real_floor"]
    levels = [row["truncation"] for row in rows]
    fig, (fid_axis, ratio_axis) = plt.subplots(1, 2, figsize=(10, 4))
    fid_axis.plot(levels, [row["model"]["fid"] / floor["fid"] for row in rows], marker="o")
    fid_axis.set_ylabel("FID / real floor (lower is better)")
    for key in FLOOR_RATIOS:
        ratio_axis.plot(levels, [row["model"][key] / floor[key] for row in rows], marker="o", label=key)
    ratio_axis.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ratio_axis.set_ylabel("model / real floor (1 = the floor)")
    ratio_axis.legend(fontsize=8)
    for axis in (fid_axis, ratio_axis):
        axis.set_xlabel("truncation (1 = none)")
        axis.invert_xaxis()  # stronger truncation to the right
        axis.grid(alpha=0.3)
    title = f"{sweep_result['source']['name']}: truncation on the {PARTS[sweep_result['part']]} split"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def sample_rows(source: ImageSource, levels: tuple[float, ...], seed: int) -> np.ndarray:
    """One row per level: label c with latent seed ``seed + c``, scaled by the level (the evaluation's first
    images of each level)."""
    labels = np.arange(source.num_classes, dtype=np.int64)
    latents = latents_for_seeds(range(seed, seed + source.num_classes), source.latent_dim)
    return np.concatenate([source.generate(truncate(latents, level), labels) for level in levels])


def labelled_picture(images: np.ndarray, levels: tuple[float, ...]) -> Image.Image:
    """The rows of ``sample_rows``, enlarged, each with its level written to its left."""
    grid = image_grid(images, rows=len(levels))
    grid = grid.resize((grid.width * SAMPLE_SCALE, grid.height * SAMPLE_SCALE), Image.Resampling.NEAREST)
    picture = Image.new(grid.mode, (grid.width + LABEL_MARGIN, grid.height), color="black")
    picture.paste(grid, (LABEL_MARGIN, 0))
    draw, row_height = ImageDraw.Draw(picture), grid.height / len(levels)
    for index, level in enumerate(levels):
        draw.text((4, int((index + 0.4) * row_height)), f"{level:g}", fill="white")
    return picture


def markdown(sweep_result: dict, command: str) -> str:
    floor = sweep_result["real_floor"]
    return "\n".join(
        [
            f"# Truncation trade-off of `{sweep_result['source']['name']}`",
            "",
            f"Measured by `gan-eval` on the {PARTS[sweep_result['part']]} split "
            f"({sweep_result['settings']['n']:,} "
            f"images per level, latent seed {sweep_result['settings']['seed']}, classifier "
            f"`{sweep_result['classifier']}`); real floor: FID {floor['fid']:.3f}, label accuracy "
            f"{100 * floor['label_accuracy']:.2f}%, precision {floor['precision']:.3f}, recall "
            f"{floor['recall']:.3f}, density {floor['density']:.3f}, coverage {floor['coverage']:.3f}, "
            f"CAS {100 * floor['cas']:.2f}%. The service's `truncation` parameter scales every latent by "
            "the level (1 = none).",
            "",
            table(sweep_result),
            "",
            f"![FID and the other metrics against the real floor by truncation]({SWEEP_PLOT})",
            "",
            "One row per level, its level at its left (top to bottom: "
            + ", ".join(f"{row['truncation']:g}" for row in sweep_result["rows"])
            + f"), label c in column c with latent seed {sweep_result['settings']['seed']} + c:",
            "",
            f"![samples by truncation]({SWEEP_SAMPLES})",
            "",
            "Made with:",
            "",
            "```",
            command,
            "```",
            "",
        ]
    )


def write_sweep(
    sweep_result: dict, source: ImageSource, levels: tuple[float, ...], out: Path, command: str
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / SWEEP_FILE).write_text(json.dumps(sweep_result | {"command": command}, indent=2) + "\n")
    plot(sweep_result, out / SWEEP_PLOT)
    images = sample_rows(source, levels, sweep_result["settings"]["seed"])
    labelled_picture(images, levels).save(out / SWEEP_SAMPLES)
    (out / SWEEP_REPORT).write_text(markdown(sweep_result, command))
    return out

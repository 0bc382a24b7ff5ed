"""What ``gan-eval`` shows and writes: the metric table (model beside the real floor), ``metrics.json``,
``report.md`` and the sample grid (row = label)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from evaluation.evaluate import Evaluation
from train.artifacts import save_grid

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
GRID_FILE = "samples.png"
GRID_COLUMNS = 10
GRID_SCALE = 2


def _pm(mean_key: str, std_key: str, scale: float = 1.0, digits: int = 2) -> Callable[[dict], str]:
    return lambda m: f"{m[mean_key] * scale:.{digits}f} ± {m[std_key] * scale:.{digits}f}"


# (row name, how to format one metrics dict, what it means)
ROWS: list[tuple[str, Callable[[dict], str], str]] = [
    ("label accuracy", lambda m: f"{100 * m['label_accuracy']:.2f}%", "classifier agrees with asked label"),
    ("worst label accuracy", lambda m: f"{100 * min(m['per_label_accuracy']):.1f}%", "lowest label"),
    ("FID", lambda m: f"{m['fid']:.3f}", "Fréchet distance in classifier features (lower is better)"),
    ("KID ×1000", _pm("kid_mean", "kid_std", 1000, 3), "unbiased cubic-kernel MMD², mean ± std over subsets"),
    ("Inception Score", _pm("inception_score_mean", "inception_score_std"), "classifier-based; max = labels"),
    ("precision", lambda m: f"{m['precision']:.3f}", "share of images on the real manifold (k-NN)"),
    ("recall", lambda m: f"{m['recall']:.3f}", "share of real images on the generated manifold (k-NN)"),
    ("1-NN accuracy", lambda m: f"{m['one_nn']['accuracy']:.3f}", "leave-one-out two-sample test, 0.5 ideal"),
    ("MMD² (Gaussian) ×1000", lambda m: f"{1000 * m['mmd2_gaussian']:.3f}", "fixed bandwidth, unbiased"),
    (
        "min diversity ratio",
        lambda m: f"{min(m['per_label_diversity_ratio']):.3f}",
        "lowest per-label spread, generated / held-out real",
    ),
    ("min label recall", lambda m: f"{min(m['per_label_recall']):.3f}", "lowest per-label recall"),
]


def table_rows(result: dict) -> list[tuple[str, str, str]]:
    return [(name, fmt(result["model"]), fmt(result["real_floor"])) for name, fmt, _ in ROWS]


def format_table(result: dict) -> str:
    """Plain-text table for the terminal, ending with the product bar's verdict."""
    rows = [("metric", "model", "real floor"), *table_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", *verdict_lines(result)])


def verdict_lines(result: dict) -> list[str]:
    bar = result["product_bar"]
    lines = [f"product bar: {'PASS' if bar['passed'] else 'FAIL'}"]
    for name, check in bar["checks"].items():
        value = check["value"]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"  [{'ok' if check['passed'] else 'FAIL'}] {name} = {shown}  (rule: {check['rule']})")
    return lines


def per_label_table(result: dict) -> str:
    model, floor = result["model"], result["real_floor"]
    check = result["product_bar"]["checks"]["collapsed_labels"]
    low_diversity, low_recall = set(check["low_diversity"]), set(check["low_recall"])
    lines = [
        "| label | accuracy | diversity ratio | recall | real-floor recall | collapsed |",
        "|---|---|---|---|---|---|",
    ]
    for k, accuracy in enumerate(model["per_label_accuracy"]):
        lines.append(
            f"| {k} | {100 * accuracy:.1f}% | {model['per_label_diversity_ratio'][k]:.3f} | "
            f"{model['per_label_recall'][k]:.3f} | {floor['per_label_recall'][k]:.3f} | "
            f"{_collapse_reason(k in low_diversity, k in low_recall)} |"
        )
    return "\n".join(lines)


def _collapse_reason(low_diversity: bool, low_recall: bool) -> str:
    reasons = [name for name, flagged in (("diversity", low_diversity), ("recall", low_recall)) if flagged]
    return f"**yes** ({' and '.join(reasons)})" if reasons else "no"


def markdown(result: dict, command: str) -> str:
    rows = "\n".join(
        f"| {name} | {model} | {floor} | {meaning} |"
        for (name, model, floor), (_, _, meaning) in zip(table_rows(result), ROWS, strict=True)
    )
    settings, data = result["settings"], result["data"]
    notes = "".join(f"\n> Note: {note}\n" for note in result["notes"])
    return f"""# Evaluation of `{result["source"]["name"]}` ({result["source"]["kind"]})

Command: `{command}`
{notes}
{settings["n"]} images generated (labels balanced, latents `request_latents(seed={settings["seed"]}, n)`,
truncation {settings["truncation"]}), measured against the {data["split"]["held_out_count"]} held-out real
images of `{data["source"]}` in the feature space of the domain classifier (`{result["classifier"]["dir"]}`,
held-out accuracy {100 * result["classifier"]["held_out_accuracy"]:.2f}%). The real floor is the same
metrics for {result["real_floor"]["count"]} training-split real images against the same held-out images
(its label accuracy: the classifier on the held-out images).

| metric | model | real floor | meaning |
|---|---|---|---|
{rows}

## Product bar

```
{chr(10).join(verdict_lines(result))}
```

## Per label

{per_label_table(result)}

## Samples (row = label, column = latent)

![samples]({GRID_FILE})
"""


def sample_grid_images(images: np.ndarray, labels: np.ndarray, num_classes: int, columns: int) -> np.ndarray:
    """The first ``columns`` images of every label, label-major (one grid row per label)."""
    rows = [images[labels == k][:columns] for k in range(num_classes)]
    columns = min(len(row) for row in rows)
    return np.concatenate([row[:columns] for row in rows])


def write_report(evaluation: Evaluation, out_dir: str | Path, command: str) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluation.result | {"command": command}
    (out_dir / METRICS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    num_classes = len(result["model"]["per_label_accuracy"])
    grid = sample_grid_images(evaluation.images, evaluation.labels, num_classes, GRID_COLUMNS)
    save_grid(out_dir / GRID_FILE, grid, rows=num_classes, scale=GRID_SCALE)
    (out_dir / REPORT_FILE).write_text(markdown(result, command))
    return out_dir

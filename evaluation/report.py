"""What ``gan-eval`` shows and writes: the metric table (model beside the real floor), ``metrics.json``,
``report.md`` and the sample grid (row = label)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from evaluation.evaluate import PARTS, Evaluation
from train.artifacts import save_grid

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
GRID_FILE = "samples.png"
GRID_COLUMNS = 10
GRID_SCALE = 2


NOT_MEASURED = "—"  # a metric that results written before it existed (e.g. a shipped manifest's) lack


def _pm(mean_key: str, std_key: str, scale: float = 1.0, digits: int = 2) -> Callable[[dict], str]:
    return lambda m: f"{m[mean_key] * scale:.{digits}f} ± {m[std_key] * scale:.{digits}f}"


def _newer(key: str, fmt: Callable[[float], str]) -> Callable[[dict], str]:
    """Format ``m[key]``, or NOT_MEASURED where the result predates that metric."""
    return lambda m: fmt(m[key]) if key in m else NOT_MEASURED


# (row name, how to format one metrics dict, what it means)
ROWS: list[tuple[str, Callable[[dict], str], str]] = [
    ("label accuracy", lambda m: f"{100 * m['label_accuracy']:.2f}%", "classifier agrees with asked label"),
    ("worst label accuracy", lambda m: f"{100 * min(m['per_label_accuracy']):.1f}%", "lowest label"),
    ("FID", lambda m: f"{m['fid']:.3f}", "Fréchet distance in classifier features (lower is better)"),
    ("KID ×1000", _pm("kid_mean", "kid_std", 1000, 3), "unbiased cubic-kernel MMD², mean ± std over subsets"),
    ("Inception Score", _pm("inception_score_mean", "inception_score_std"), "classifier-based; max = labels"),
    ("precision", lambda m: f"{m['precision']:.3f}", "share of images on the real manifold (k-NN)"),
    ("recall", lambda m: f"{m['recall']:.3f}", "share of real images on the generated manifold (k-NN)"),
    ("density", _newer("density", "{:.3f}".format), "real k-NN balls per image / k (about 1 for real)"),
    ("coverage", _newer("coverage", "{:.3f}".format), "share of real images whose k-NN ball holds an image"),
    ("1-NN accuracy", lambda m: f"{m['one_nn']['accuracy']:.3f}", "leave-one-out two-sample test, 0.5 ideal"),
    ("MMD² (Gaussian) ×1000", lambda m: f"{1000 * m['mmd2_gaussian']:.3f}", "fixed bandwidth, unbiased"),
    (
        "min diversity ratio",
        lambda m: f"{min(m['per_label_diversity_ratio']):.3f}",
        "lowest per-label spread, generated / held-out real",
    ),
    ("min label recall", lambda m: f"{min(m['per_label_recall']):.3f}", "lowest per-label recall"),
    ("intra-class FID, mean", _newer("intra_fid_mean", "{:.3f}".format), "FID within each label, averaged"),
    (
        "intra-class FID, worst",
        _newer("intra_fid_per_label", lambda v: f"{max(v):.3f}"),
        "highest per-label FID",
    ),
    (
        "CAS",
        _newer("cas", lambda v: f"{100 * v:.2f}%"),
        "fresh classifier trained on these images only, accuracy on the real ones",
    ),
]


def table_rows(result: dict) -> list[tuple[str, str, str]]:
    return [(name, fmt(result["model"]), fmt(result["real_floor"])) for name, fmt, _ in ROWS]


def format_table(result: dict) -> str:
    """Plain-text table for the terminal, ending with the product bar's verdict and any notes."""
    rows = [("metric", "model", "real floor"), *table_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    cas = result.get("cas")
    gap = [f"CAS gap (trained on real minus on generated): {cas_gap_text(cas)}"] if cas else []
    notes = [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join([*lines, *gap, "", *verdict_lines(result), *notes])


def verdict_lines(result: dict) -> list[str]:
    bar = result["product_bar"]
    lines = [f"product bar: {'PASS' if bar['passed'] else 'FAIL'}"]
    for name, check in bar["checks"].items():
        value = check["value"]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"  [{'ok' if check['passed'] else 'FAIL'}] {name} = {shown}  (rule: {check['rule']})")
    return lines


def _per_label(metrics: dict, key: str, k: int, fmt: Callable[[float], str]) -> str:
    return fmt(metrics[key][k]) if key in metrics else NOT_MEASURED


def per_label_table(result: dict) -> str:
    model, floor = result["model"], result["real_floor"]
    check = result["product_bar"]["checks"]["collapsed_labels"]
    low_diversity, low_recall = set(check["low_diversity"]), set(check["low_recall"])
    fid, percent = "{:.3f}".format, lambda v: f"{100 * v:.1f}%"
    lines = [
        "| label | accuracy | diversity ratio | recall | real-floor recall | FID | real-floor FID | CAS "
        "| real-floor CAS | collapsed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, accuracy in enumerate(model["per_label_accuracy"]):
        lines.append(
            f"| {k} | {100 * accuracy:.1f}% | {model['per_label_diversity_ratio'][k]:.3f} | "
            f"{model['per_label_recall'][k]:.3f} | {floor['per_label_recall'][k]:.3f} | "
            f"{_per_label(model, 'intra_fid_per_label', k, fid)} | "
            f"{_per_label(floor, 'intra_fid_per_label', k, fid)} | "
            f"{_per_label(model, 'cas_per_label', k, percent)} | "
            f"{_per_label(floor, 'cas_per_label', k, percent)} | "
            f"{_collapse_reason(k in low_diversity, k in low_recall)} |"
        )
    return "\n".join(lines)


def against_text(result: dict) -> str:
    """'the 1000 held-out real images': what the metrics were measured against."""
    against = result.get("evaluated_against") or {
        "part": "held_out",
        "count": result["data"]["split"]["held_out_count"],
    }
    return f"the {against['count']} {PARTS.get(against['part'], against['part'])} real images"


def cas_gap_text(cas: dict) -> str:
    """'0.32 points', or with several classifiers per side '0.32 ± 0.08 points (mean of 3 per side, ±
    standard error)'."""
    if "runs" not in cas:
        return f"{cas['gap_points']:.2f} points"
    return (
        f"{cas['gap_points']:.2f} ± {cas['gap_points_stderr']:.2f} points (mean of {cas['runs']} classifiers "
        "per side, ± standard error)"
    )


def cas_text(result: dict) -> str:
    """The augmentation question in one paragraph: CAS beside the same classifier trained on real images."""
    cas = result.get("cas")
    if cas is None:
        return "Not measured (this result predates CAS)."
    training = cas["classifier"]["training"]
    arch = cas["classifier"]["architecture"]
    several = "runs" in cas
    seeds = f"seeds {cas['seeds'][0]}-{cas['seeds'][-1]}" if several else f"seed {training['seed']}"

    def accuracy(key: str) -> str:
        spread = f" (s.d. {100 * cas[f'{key}_std']:.2f} over {cas['runs']} classifiers)" if several else ""
        return f"**{100 * cas[key]:.2f}%**{spread}"

    return (
        f"A fresh classifier (channels {arch['channels']}, {arch['feature_dim']} features; "
        f"epochs {training['epochs']}, batch {training['batch_size']}, {seeds}, the domain "
        f"classifier's augmentation) trained on {cas['train_count']} generated images only reaches "
        f"{accuracy('accuracy')} on {against_text(result)}; trained on {cas['train_count']} real "
        f"training images instead, it reaches {accuracy('real_accuracy')}: a gap of "
        f"**{cas_gap_text(cas)}**. A small gap means images from this generator can stand in for "
        "real training data for such a classifier."
    )


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
truncation {settings["truncation"]}), measured against {against_text(result)} of `{data["source"]}` in the
feature space of the domain classifier (`{result["classifier"]["dir"]}`, held-out accuracy
{100 * result["classifier"]["held_out_accuracy"]:.2f}%). The real floor is the same metrics for
{result["real_floor"]["count"]} training-split real images against the same real images (its label accuracy:
the classifier on those images; its CAS: the CAS classifier trained on those training images).

| metric | model | real floor | meaning |
|---|---|---|---|
{rows}

## Augmentation: train on generated, test on real (CAS)

{cas_text(result)}

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

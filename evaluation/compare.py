"""``gan-eval compare``: every variant (model × loss, and the cVAE) trained with one budget and seed through
the shared training loop, evaluated the same way, in one table with sample grids (``reports/variants.md``).

Runs go to ``--runs-dir`` and are resumed, so an interrupted comparison continues where it stopped; the table
is rewritten after every variant. Training time depends on the (shared) machine: compare it between rows of
one report only.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evaluation.evaluate import EvalSettings, ProductBar, Reference, evaluate_source
from evaluation.report import GRID_FILE, write_report
from evaluation.sources import open_source
from train.cli import command_for
from train.loop import TrainConfig, train
from train.losses import LOSSES
from train.models import VARIANTS

REPORT_NAME = "variants.md"
RESULTS_NAME = "variants.json"
EVAL_DIR = "variants"


@dataclass(frozen=True)
class CompareSettings:
    epochs: int = 5  # the budget, the same for every variant (passes over the training split)
    seed: int = 0
    # autoregressive models (PixelCNN) only when named: sampling one costs a pass per pixel, which would make
    # the default comparison of the GAN family several times slower
    models: tuple[str, ...] = tuple(name for name, variant in VARIANTS.items() if not variant.autoregressive)
    losses: tuple[str, ...] = tuple(LOSSES)
    runs_dir: Path = Path("runs/compare")
    out: Path = Path("reports")
    device: str = "auto"  # gan-train's --device: CUDA when torch sees a GPU
    width: int | None = None  # None: gan-train's default
    batch_size: int | None = None


def variant_names(models: tuple[str, ...], losses: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(model, loss) pairs: every adversarial model with every loss; a non-adversarial one with its own."""
    for model in models:
        if model not in VARIANTS:
            raise ValueError(f"unknown model '{model}'; choose from {sorted(VARIANTS)}")
        fixed_loss = VARIANTS[model].fixed_loss
        if fixed_loss is not None:
            yield model, fixed_loss
            continue
        for loss in losses:
            if loss not in LOSSES:
                raise ValueError(f"unknown loss '{loss}'; choose from {sorted(LOSSES)}")
            yield model, loss


def variant_config(model: str, loss: str, settings: CompareSettings) -> TrainConfig:
    """One row's training: the ``gan-train`` defaults but for the variant, the budget, the seed and the
    width and batch size when given."""
    sizes = {"width": settings.width, "batch_size": settings.batch_size}
    chosen = {key: value for key, value in sizes.items() if value is not None}
    return TrainConfig(model=model, loss=loss, epochs=settings.epochs, seed=settings.seed, **chosen)


def run_variant(
    model: str,
    loss: str,
    settings: CompareSettings,
    reference: Reference,
    eval_settings: EvalSettings,
    bar: ProductBar,
) -> dict:
    name = f"{model}-{loss}"
    run_dir = settings.runs_dir / name
    config = variant_config(model, loss, settings)
    command = command_for(config, run_dir, settings.device)
    summary = train(config, run_dir, progress=False, command=command, device=settings.device)
    evaluation = evaluate_source(open_source(run_dir), reference, eval_settings, bar)
    eval_dir = settings.out / EVAL_DIR / name
    write_report(evaluation, eval_dir, shlex.join(["gan-eval", str(run_dir), "--out", str(eval_dir)]))
    result = evaluation.result
    return {
        "name": name,
        "model": model,
        "loss": loss,
        "conditional": result["conditional"],
        "epochs": summary.epochs,
        "steps": summary.steps,
        "train_minutes": summary.train_seconds / 60,
        "train_command": command,
        "training": evaluation.source.details["config"]["training"],
        "model_metrics": result["model"],
        "real_floor": result["real_floor"],
        "product_bar": result["product_bar"],
        "samples": f"{EVAL_DIR}/{name}/{GRID_FILE}",
    }


def compare(
    settings: CompareSettings,
    reference: Reference,
    eval_settings: EvalSettings = EvalSettings(),  # noqa: B008
    bar: ProductBar = ProductBar(),  # noqa: B008
    command: str = "gan-eval compare",
    log: Callable[[str], None] = print,
) -> list[dict]:
    rows: list[dict] = []
    settings.out.mkdir(parents=True, exist_ok=True)
    for model, loss in list(variant_names(settings.models, settings.losses)):
        started = time.perf_counter()
        try:
            rows.append(run_variant(model, loss, settings, reference, eval_settings, bar))
        except (
            ValueError,
            RuntimeError,
            FloatingPointError,
        ) as exc:  # a diverged or broken variant is a result
            rows.append({"name": f"{model}-{loss}", "model": model, "loss": loss, "error": str(exc)})
        log(f"{model}-{loss}: {_summary(rows[-1])} ({time.perf_counter() - started:.0f}s)")
        (settings.out / RESULTS_NAME).write_text(json.dumps(rows, indent=2) + "\n")
        (settings.out / REPORT_NAME).write_text(markdown(rows, settings, command))
    return rows


def _summary(row: dict) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    m = row["model_metrics"]
    verdict = "PASS" if row["product_bar"]["passed"] else "FAIL"
    return f"label acc {m['label_accuracy']:.3f}, FID {m['fid']:.3f}, bar {verdict}"


def _number(metrics: dict, key: str) -> str:
    return f"{metrics[key]:.3f}" if isinstance(metrics.get(key), int | float) else "—"


def _augmentation_cells(metrics: dict) -> str:
    """density | coverage | CAS ("—" in results measured before these metrics existed)."""
    cas = f"{100 * metrics['cas']:.1f}%" if isinstance(metrics.get("cas"), int | float) else "—"
    return f"{_number(metrics, 'density')} | {_number(metrics, 'coverage')} | {cas}"


def markdown(rows: list[dict], settings: CompareSettings, command: str) -> str:
    floor = next((row["real_floor"] for row in rows if "real_floor" in row), None)
    lines = [
        "# Variants compared",
        "",
        f"Command: `{command}`",
        "",
        f"Every variant trained with the same budget ({settings.epochs} epochs over the training split, "
        f"seed {settings.seed}, otherwise the `gan-train` defaults listed below) and evaluated the same way "
        "(`gan-eval` defaults: 10,000 generated images or the training split's size when smaller, balanced "
        "over labels, latent seed 0, against the held-out split in the domain classifier's feature space). "
        "FID ratio = model FID / real-floor FID; 1-NN: 0.5 is ideal. Unconditional variants ignore the "
        "label, so their label accuracy is chance by design. Intra-FID: mean of the per-label FIDs. CAS: "
        "accuracy on the held-out "
        "real images of a small classifier trained on the variant's images only (the floor's: trained on as "
        "many real ones). Training minutes were measured on a shared 2-core CPU.",
        "",
        "| variant | label acc | FID | FID ratio | intra-FID | KID ×1000 | IS | precision | recall "
        "| density | coverage | CAS | 1-NN | collapsed labels (low diversity / low recall) | bar "
        "| train min | samples |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | failed: {row['error']} |" + " |" * 15)
            continue
        m, checks = row["model_metrics"], row["product_bar"]["checks"]
        collapsed = checks["collapsed_labels"]
        lines.append(
            f"| {row['name']}{'' if row['conditional'] else ' (uncond.)'} | "
            f"{100 * m['label_accuracy']:.1f}% | "
            f"{m['fid']:.3f} | {checks['fid_ratio']['value']:.2f} | {_number(m, 'intra_fid_mean')} | "
            f"{1000 * m['kid_mean']:.2f} | {m['inception_score_mean']:.2f} | {m['precision']:.3f} | "
            f"{m['recall']:.3f} | {_augmentation_cells(m)} | {m['one_nn']['accuracy']:.3f} | "
            f"{len(collapsed['low_diversity'])} / {len(collapsed['low_recall'])} | "
            f"{'PASS' if row['product_bar']['passed'] else 'FAIL'} | {row['train_minutes']:.1f} | "
            f"![{row['name']}]({row['samples']}) |"
        )
    if floor is not None:
        lines.append(
            f"| **real floor** (training vs held-out real) | {100 * floor['label_accuracy']:.1f}% | "
            f"{floor['fid']:.3f} | 1.00 | {_number(floor, 'intra_fid_mean')} | "
            f"{1000 * floor['kid_mean']:.2f} | "
            f"{floor['inception_score_mean']:.2f} | {floor['precision']:.3f} | {floor['recall']:.3f} | "
            f"{_augmentation_cells(floor)} | {floor['one_nn']['accuracy']:.3f} | 0 / 0 | | | |"
        )
    recipes = [row["training"] for row in rows if "training" in row]
    if recipes:
        varied = ("model", "loss", "n_critic", "epochs")
        shared = {
            k: v for k, v in recipes[0].items() if k not in varied and all(r.get(k) == v for r in recipes)
        }
        lines += [
            "",
            f"Shared training settings: `{json.dumps(shared)}` (WGAN losses: 5 critic steps per "
            "generator step, the loss's own default).",
        ]
    lines += [
        "",
        "Per-variant reports (per-label numbers, the product bar's checks): "
        f"`{settings.out / EVAL_DIR}/<variant>/report.md`. To remake one run, use the `train_command` in "
        f"`{settings.out / RESULTS_NAME}`.",
        "",
    ]
    return "\n".join(lines)

"""One row of the variant report (``reports/variants.md``) from a ``gan-eval`` result, with the held-out
likelihood an autoregressive model's manifest records (bits per dimension): how the pixelcnn row was written.

    python -m evaluation.variant_row reports/variants/pixelcnn-nll/metrics.json --model-dir MODEL_DIR \
        --samples variants/pixelcnn-nll/samples.png --train-minutes 24.9

The columns are the report's main table's, then the held-out bits per dimension ("—" for a model without a
likelihood: the GANs and the VAE's decoder report none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contracts.model_dir import read_manifest

HEADER = (
    "| variant | label acc | FID | FID ratio | KID ×1000 | IS | precision | recall | 1-NN "
    "| collapsed labels (low diversity / low recall) | bar | train min | images | held-out bits/dim "
    "| samples |"
)
RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"


def held_out_bits(model_dir: Path | None) -> float | None:
    if model_dir is None:
        return None
    likelihood = (read_manifest(model_dir).autoregressive or {}).get("likelihood") or {}
    bits = likelihood.get("held_out_bits_per_dim")
    return float(bits) if isinstance(bits, int | float) else None


def row(name: str, result: dict, bits: float | None, train_minutes: float | None, samples: str) -> str:
    """The markdown row of one ``gan-eval`` result (``metrics.json``)."""
    m, checks = result["model"], result["product_bar"]["checks"]
    collapsed = checks["collapsed_labels"]
    minutes = f"{train_minutes:.1f}" if train_minutes is not None else "—"
    return (
        f"| {name}{'' if result['conditional'] else ' (uncond.)'} | {100 * m['label_accuracy']:.1f}% | "
        f"{m['fid']:.3f} | {checks['fid_ratio']['value']:.2f} | {1000 * m['kid_mean']:.2f} | "
        f"{m['inception_score_mean']:.2f} | {m['precision']:.3f} | {m['recall']:.3f} | "
        f"{m['one_nn']['accuracy']:.3f} | "
        f"{len(collapsed['low_diversity'])} / {len(collapsed['low_recall'])} | "
        f"{'PASS' if result['product_bar']['passed'] else 'FAIL'} | {minutes} | {m['count']} | "
        f"{'—' if bits is None else f'{bits:.4f}'} | ![{name}]({samples}) |"
    )


def floor_row(result: dict) -> str:
    """The real floor measured with the same number of images, in the same columns."""
    f = result["real_floor"]
    return (
        f"| **real floor** (same n) | {100 * f['label_accuracy']:.1f}% | {f['fid']:.3f} | 1.00 | "
        f"{1000 * f['kid_mean']:.2f} | {f['inception_score_mean']:.2f} | {f['precision']:.3f} | "
        f"{f['recall']:.3f} | {f['one_nn']['accuracy']:.3f} | 0 / 0 | | | {f.get('count', '')} | | |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.variant_row", description=__doc__)
    parser.add_argument("metrics", type=Path, help="gan-eval's metrics.json")
    parser.add_argument("--model-dir", type=Path, help="the evaluated model directory (for bits/dim)")
    parser.add_argument("--name", help="the row's name (default: the result's source name)")
    parser.add_argument("--samples", default="", help="the sample grid's path, relative to the report")
    parser.add_argument("--train-minutes", type=float, help="training minutes (the run's train_seconds / 60)")
    args = parser.parse_args(argv)
    result = json.loads(args.metrics.read_text())
    name = args.name or result["source"].get("name", "?")
    bits = held_out_bits(args.model_dir)
    print(
        "\n".join(
            [HEADER, RULE, row(name, result, bits, args.train_minutes, args.samples), floor_row(result)]
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The two report helpers of issue #18: the sampling-speed table (loadtest.sampling_speed) and the variant
report's row with held-out bits/dim (evaluation.variant_row)."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation import variant_row
from loadtest import sampling_speed

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "models" / "mnist-cdcgan"
CVAE_RESULT = REPO_ROOT / "reports" / "variants" / "cvae-elbo" / "metrics.json"


def test_sampling_speed_times_both_kinds_and_states_the_ratio(pixelcnn_dirs, tmp_path: Path):
    out = tmp_path / "speed.md"
    args = [str(SHIPPED), str(pixelcnn_dirs[1]), "--batches", "1,2", "--repeats", "1", "--out", str(out)]
    assert sampling_speed.main(args) == 0
    text = out.read_text()
    assert "| mnist-cdcgan" in text and "| tiny-pixelcnn 1.0.0 | autoregressive | 2 |" in text
    assert "- batch 1: the GAN makes" in text and "- batch 2: the GAN makes" in text


def test_variant_row_has_the_report_columns_and_bits_per_dim(pixelcnn_dirs):
    result = json.loads(CVAE_RESULT.read_text())
    bits = variant_row.held_out_bits(pixelcnn_dirs[1])
    line = variant_row.row("pixelcnn-nll", result, bits, 1.5, "variants/x.png")
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert (
        len(cells) == variant_row.HEADER.count("|") - 1 == len(variant_row.floor_row(result).split("|")) - 2
    )
    assert cells[0] == "pixelcnn-nll" and cells[-2] == f"{bits:.4f}" and cells[-4] == "1.5"
    assert variant_row.held_out_bits(None) is None and variant_row.held_out_bits(SHIPPED) is None

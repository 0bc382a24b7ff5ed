"""``gan-eval truncation``: one generator measured at several truncation levels, as the service applies
them."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from evaluation_support import FAST, FAST_FLAGS, untrained_run_dir
from PIL import Image

from contracts.latents import latents_for_seeds
from evaluation.cli import EXIT_BAD_INPUT, main
from evaluation.evaluate import evaluate_source
from evaluation.sources import open_source
from evaluation.truncation import (
    LABEL_MARGIN,
    SAMPLE_SCALE,
    SWEEP_FILE,
    SWEEP_PLOT,
    SWEEP_REPORT,
    SWEEP_SAMPLES,
    parse_levels,
    sample_rows,
    sweep,
    table,
)
from train.artifacts import image_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_levels_parse_in_the_order_given():
    assert parse_levels("1,0.8,0.5") == (1.0, 0.8, 0.5)


@pytest.mark.parametrize("text", ["0", "1.5", "1,1", "a", "1,,0.5", "-0.5"])
def test_bad_levels_are_refused_naming_the_flag_and_range(text: str):
    with pytest.raises(ValueError, match=r"--levels must be .*in \(0, 1\]"):
        parse_levels(text)


def test_each_level_is_the_evaluation_gan_eval_makes_at_that_truncation(tmp_path, reference):
    source = open_source(untrained_run_dir(tmp_path / "run", reference))
    floors = len(reference._floors)
    result = sweep(source, reference, replace(FAST, seed=3), (1.0, 0.5), progress=False)
    assert len(reference._floors) <= floors + 1  # one real floor for every level and latent seed

    assert [row["truncation"] for row in result["rows"]] == [1.0, 0.5]
    assert result["part"] == "held_out" and result["settings"]["n"] == FAST.n
    assert result["settings"]["seed"] == 3 and result["settings"]["cas_epochs"] == FAST.cas_epochs
    lines = table(result).splitlines()[2:]
    for row, line in zip(result["rows"], lines, strict=True):
        alone = evaluate_source(source, reference, replace(FAST, seed=3, truncation=row["truncation"])).result
        assert row["model"]["fid"] == alone["model"]["fid"]
        assert row["model"]["cas"] == alone["model"]["cas"]
        cells = line.strip("|").split(" | ")
        assert cells[-2].strip() == f"{alone['model']['fid'] / alone['real_floor']['fid']:.2f}×"
        assert cells[-1].strip() == f"{alone['cas']['gap_points']:.2f}"
    assert result["rows"][0]["model"]["fid"] != result["rows"][1]["model"]["fid"]


def test_the_picture_has_a_row_per_level_made_from_scaled_latents(tmp_path, reference):
    source = open_source(untrained_run_dir(tmp_path / "run", reference))
    rows = sample_rows(source, (1.0, 0.5), seed=5)
    labels = np.arange(reference.num_classes)
    latents = latents_for_seeds(range(5, 5 + reference.num_classes), source.latent_dim)
    np.testing.assert_array_equal(rows[: len(labels)], source.generate(latents, labels))
    np.testing.assert_array_equal(rows[len(labels) :], source.generate(latents * np.float32(0.5), labels))


def test_cli_writes_the_table_plot_picture_and_json(tmp_path, reference, capsys):
    run = untrained_run_dir(tmp_path / "run", reference)
    out = tmp_path / "sweep"
    argv = ["truncation", str(run), *FAST_FLAGS, "--cas-epochs", "1", "--levels", "1,0.7,0.4"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    result = json.loads((out / SWEEP_FILE).read_text())
    assert [row["truncation"] for row in result["rows"]] == [1.0, 0.7, 0.4]
    assert result["settings"]["n"] == 500 and result["command"].startswith("gan-eval truncation ")
    report = (out / SWEEP_REPORT).read_text()
    assert (
        report.count("\n| 0.7 | ") == 1 and f"]({SWEEP_PLOT})" in report and f"]({SWEEP_SAMPLES})" in report
    )
    assert (out / SWEEP_PLOT).read_bytes()[:8] == PNG_MAGIC
    expected = image_grid(sample_rows(open_source(run), (1.0, 0.7, 0.4), seed=0), rows=3)
    with Image.open(out / SWEEP_SAMPLES) as picture:
        width, height = expected.width * SAMPLE_SCALE, expected.height * SAMPLE_SCALE
        assert picture.size == (LABEL_MARGIN + width, height)
        assert np.asarray(picture)[:, :LABEL_MARGIN].max() > 0  # the levels are written beside the rows
    assert "(top to bottom: 1, 0.7, 0.4)" in report
    assert "| truncation | label accuracy |" in printed and f"wrote {out}/{SWEEP_REPORT}" in printed


def test_bad_levels_on_the_command_line_are_one_line_and_exit_2(tmp_path, reference, capsys):
    run = untrained_run_dir(tmp_path / "run", reference)
    assert main(["truncation", str(run), "--levels", "1,0"]) == EXIT_BAD_INPUT
    assert (
        capsys.readouterr().err == "gan-eval: error: --levels must be distinct numbers in (0, 1], got '1,0'\n"
    )

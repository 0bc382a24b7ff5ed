"""``gan-eval projection``: the report on the shipped model's encoder, end to end on a few held-out digits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluation.cli import main
from evaluation.projection import nearest, pixel_mse
from tests.conftest import MODELS_DIR


def test_nearest_and_pixel_mse():
    pool = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    index, dist = nearest(np.array([[9, 1], [1, 8]], np.float32), pool)
    assert index.tolist() == [1, 2] and dist.tolist() == pytest.approx([2, 5])
    a = np.zeros((2, 2, 2, 1), np.uint8)
    b = np.full((2, 2, 2, 1), 255, np.uint8)
    assert pixel_mse(a, b).tolist() == [1.0, 1.0]


def test_the_report_measures_the_shipped_encoder(tmp_path, capsys):
    # MNIST test digits, which neither 1.2.0 (mnist5k, inside MNIST train) nor a full-MNIST model trained on
    args = ["--out", str(tmp_path), "--n", "20", "--part", "test"]
    classifier = ["--classifier", str(MODELS_DIR / "mnist-classifier-full")]
    assert main(["projection", str(MODELS_DIR / "mnist-cdcgan"), *args, *classifier]) == 0
    report = (tmp_path / "projection.md").read_text()
    for row in ("pixel MSE", "classifier feature space", "restyled digits classified", "time per projection"):
        assert row in report
    assert "20 test real digits" in report and "nearest training image" in report
    picture = Image.open(tmp_path / "projection.png")
    assert picture.size[0] > picture.size[1]  # 12 columns (real, reconstruction, 0-9), 10 rows

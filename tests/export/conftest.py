"""One tiny real training run and one export of it, shared by the export tests (read-only: tests that damage a
model directory copy it first)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export.build import ExportOptions, export_run
from train.loop import TrainConfig, train

LATENT_DIM = 16
NUM_CLASSES = 10
# Real gan-eval output (of the shipped model), so the card renders the evaluation tables from it.
SHIPPED_MANIFEST = Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan" / "manifest.json"
TEST_METRICS = json.loads(SHIPPED_MANIFEST.read_text())["metrics"]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cdcgan trained for one epoch (5 steps) on 200 random 28x28 images: tiny, but a real run directory."""
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    data = root / "tiny.npz"
    np.savez(data, x=rng.integers(0, 256, (200, 28, 28), dtype=np.uint8), y=np.arange(200) % NUM_CLASSES)
    config = TrainConfig(
        model="cdcgan",
        epochs=1,
        batch_size=32,
        latent_dim=LATENT_DIM,
        width=8,
        embed_dim=8,
        data=str(data),
        sample_columns=2,
        log_every=1,
    )
    train(config, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="session")
def metrics_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("metrics") / "metrics.json"
    path.write_text(json.dumps(TEST_METRICS))
    return path


@pytest.fixture(scope="session")
def model_dir(run_dir: Path, metrics_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-cdcgan"
    options = ExportOptions(
        name="tiny-cdcgan",
        version="0.0.1",
        fp16=True,
        metrics=json.loads(metrics_file.read_text()),
        command=f"gan-export {run_dir} --out {out}",
    )
    export_run(run_dir, out, options)
    return out

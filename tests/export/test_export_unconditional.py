"""An unconditional generator still exports the service's interface: a ``label`` input it ignores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from contracts.latents import latents_for_seeds
from contracts.run_dir import write_config
from export.build import ExportOptions, export_run
from export.graph_check import verify_model_dir
from export.samples import PAD
from train.checkpoint import save_generator
from train.models import Architecture, build_generator


def test_unconditional_export(tmp_path: Path) -> None:
    arch = Architecture(latent_dim=8, width=4, embed_dim=4)
    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    write_config(run, {"model": "dcgan", "conditional": False, "latent_dim": 8, "num_classes": 10,
                      "image_shape": [28, 28, 1], "architecture": arch.kwargs()})  # fmt: skip
    save_generator(run, build_generator("dcgan", arch))

    manifest = export_run(run, tmp_path / "m", ExportOptions(name="u", sample_seeds=(0, 1, 2)))
    assert manifest["conditional"] is False and "extra_graphs" not in manifest
    assert manifest["labels"] == [str(k) for k in range(10)]
    verify_model_dir(tmp_path / "m")  # includes: inputs are exactly z and label

    graph = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"])
    z = np.repeat(latents_for_seeds([5], 8), 3, axis=0)
    (images,) = graph.run(["image"], {"z": z, "label": np.array([0, 4, 9])})
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])

    grid = np.asarray(Image.open(tmp_path / "m" / "samples.png"))
    row_1_col_0 = grid[PAD + 28 + PAD : PAD + 28 + PAD + 28, PAD : PAD + 28]  # seed 0 + 1 * 3
    (seed_3,) = graph.run(["image"], {"z": latents_for_seeds([3], 8), "label": np.array([0])})
    np.testing.assert_array_equal(row_1_col_0, seed_3[0, :, :, 0])

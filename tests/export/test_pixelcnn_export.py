"""gan-export of a pixelcnn run: one ONNX graph with the generators' signature whose Loop nodes sample pixel
by pixel, equal to PyTorch's sampler, marked autoregressive in the manifest with its held-out bits/dim."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pixelcnn_support import CLASSES, SERVING_MAX_BATCH, SIDE, one_torch_thread

from contracts import latents
from contracts.model_dir import read_manifest
from export.build import ExportOptions, export_run
from export.cli import summary
from export.graph import ExportError, to_image
from export.verify import session
from train.checkpoint import load_generator


@pytest.fixture(scope="module")
def dirs(pixelcnn_dirs: tuple[Path, Path]) -> tuple[Path, Path]:
    return pixelcnn_dirs


def test_manifest_marks_the_model_autoregressive_with_its_held_out_bits(dirs):
    run, model = dirs
    manifest = read_manifest(model, complete=True)
    assert manifest.sampling == "autoregressive" and not manifest.has_latent_space
    assert manifest.latent_dim == SIDE * SIDE and manifest.max_batch_hint == SERVING_MAX_BATCH
    likelihood = manifest.autoregressive["likelihood"]
    last = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][-1]
    assert likelihood["held_out_bits_per_dim"] == last["held_out_bits_per_dim"] < 2.0
    assert manifest.verification["image_max_abs_diff"] == 0 and manifest.verification["batch_sizes"] == [1, 3]
    card = (model / "README.md").read_text()
    assert "bits per dimension" in card and "no latent space" in card


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield


@pytest.mark.usefixtures("one_thread")
def test_the_graph_loops_over_the_pixels_and_equals_pytorch_sampling(dirs):
    run, model = dirs
    graph = onnx.load(model / "model.onnx")
    assert [node.op_type for node in graph.graph.node].count("Loop") == 1
    assert [i.name for i in graph.graph.input] == ["z", "label"] and graph.graph.output[0].name == "image"
    generator, _ = load_generator(run)
    shipped = session(str(model / "model.onnx"))
    for n in (1, 5):
        z = latents.request_latents(100, n, SIDE * SIDE)
        label = np.arange(n, dtype=np.int64) % CLASSES
        image = shipped.run(None, {"z": z, "label": label})[0]
        with torch.no_grad():
            expected = to_image(generator(torch.from_numpy(z), torch.from_numpy(label))).numpy()
        assert image.shape == (n, SIDE, SIDE, 1) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, expected)


def test_fp16_is_refused_for_an_autoregressive_model(dirs, tmp_path: Path):
    run, _ = dirs
    options = dataclasses.replace(ExportOptions(name="x"), fp16=True)
    with pytest.raises(ExportError, match="not supported for an autoregressive model"):
        export_run(run, tmp_path / "fp16", options)
    assert not (tmp_path / "fp16").exists()


def test_gan_export_prints_the_verification_and_the_bits_per_dim(dirs):
    _, model = dirs
    text = summary(json.loads((model / "manifest.json").read_text()), model)
    assert "uint8 max abs diff 0" in text and "float max abs diff" not in text
    assert "held-out" in text and "bits/dim" in text

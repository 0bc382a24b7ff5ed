"""A freshly trained run → gan-export → the model directory matches the run, checked independently of the
exporter's own verification (PyTorch + train.data.to_uint8 vs ONNX Runtime)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from PIL import Image

from contracts.latents import latents_for_seeds
from contracts.model_dir import EXPORT_FIELDS, Manifest, read_manifest
from contracts.run_dir import read_config
from export import card
from export.graph_check import graph_signature, verify_model_dir
from export.samples import PAD
from train.checkpoint import load_generator
from train.data import to_uint8

LATENT_DIM, NUM_CLASSES = 16, 10  # as trained in conftest.py


def _manifest(model_dir: Path) -> dict:
    return read_manifest(model_dir, complete=True).model_dump(mode="json")


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _inputs(n: int, seed: int = 100) -> tuple[np.ndarray, np.ndarray]:
    return latents_for_seeds(range(seed, seed + n), LATENT_DIM), (
        np.arange(n, dtype=np.int64) * 3
    ) % NUM_CLASSES


@pytest.mark.parametrize("n", [1, 7, 64])
def test_onnx_matches_pytorch_within_one_level(run_dir: Path, model_dir: Path, n: int) -> None:
    generator, _ = load_generator(run_dir)
    z, label = _inputs(n)
    with torch.no_grad():
        want = to_uint8(generator(torch.from_numpy(z), torch.from_numpy(label)).numpy())
    (got,) = _session(model_dir / "model.onnx").run(["image"], {"z": z, "label": label})
    assert got.dtype == np.uint8 and got.shape == (n, 28, 28, 1)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_recorded_verification(model_dir: Path) -> None:
    verification = _manifest(model_dir)["verification"]
    assert verification["batch_sizes"] == [1, 7, 64]
    assert 0 <= verification["image_max_abs_diff"] <= verification["image_tolerance"] == 1
    assert 0 <= verification["float_max_abs_diff"] <= verification["float_tolerance"]


@pytest.mark.parametrize("n", [2, 33, 130])
def test_batch_axis_is_dynamic(model_dir: Path, n: int) -> None:
    (images,) = _session(model_dir / "model.onnx").run(
        ["image"], dict(zip(("z", "label"), _inputs(n), strict=True))
    )
    assert images.shape == (n, 28, 28, 1)


def test_graph_signature(model_dir: Path) -> None:
    signature = graph_signature(onnx.load(str(model_dir / "model.onnx")))
    assert signature["inputs"] == {"z": ("float32", [None, LATENT_DIM]), "label": ("int64", [None])}
    assert signature["outputs"] == {"image": ("uint8", [None, 28, 28, 1])}


def test_batchnorm_folded_and_single_file(model_dir: Path) -> None:
    model = onnx.load(str(model_dir / "model.onnx"))
    assert "BatchNormalization" not in {node.op_type for node in model.graph.node}
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "README.md",
        "label_morph.onnx",
        "manifest.json",
        "model.fp16.onnx",
        "model.onnx",
        "samples.png",
    ]


def test_manifest_fields(run_dir: Path, model_dir: Path, metrics_file: Path) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    config = read_config(run_dir)
    # the encoder: added by gan-train-encoder afterwards; autoregressive: only autoregressive models have it
    optional = {"variants", "extra_graphs", "encoder", "autoregressive"}
    assert {*Manifest.model_fields, *EXPORT_FIELDS} - optional <= set(manifest)
    assert manifest["name"] == "tiny-cdcgan" and manifest["version"] == "0.0.1"
    assert manifest["file"] == "model.onnx"
    assert manifest["sha256"] == hashlib.sha256((model_dir / "model.onnx").read_bytes()).hexdigest()
    assert manifest["num_classes"] == NUM_CLASSES
    assert manifest["labels"] == config["label_names"]
    assert manifest["latent_dim"] == LATENT_DIM
    assert manifest["image_shape"] == [28, 28, 1]
    assert manifest["inputs"] == {"latent": "z", "label": "label"}
    assert manifest["output"] == {"name": "image", "dtype": "uint8", "layout": "NHWC", "range": [0, 255]}
    assert "127.5" in manifest["normalisation"]["formula"]
    assert manifest["opset"] == onnx.load(str(model_dir / "model.onnx")).opset_import[0].version
    assert manifest["conditional"] is True
    assert manifest["training"] == config
    assert manifest["data_split"] == config["split"]
    assert manifest["metrics"] == json.loads(metrics_file.read_text())
    assert manifest["created"].endswith("+00:00")


def test_verify_model_dir_accepts_fresh_export(model_dir: Path) -> None:
    assert verify_model_dir(model_dir).name == "tiny-cdcgan"


def test_samples_png_is_rendered_by_the_graph(model_dir: Path) -> None:
    manifest = _manifest(model_dir)
    seeds = manifest["samples"]["columns_seeds"]
    grid = np.asarray(Image.open(model_dir / "samples.png"))
    assert grid.shape == (NUM_CLASSES * (28 + PAD) + PAD, len(seeds) * (28 + PAD) + PAD)
    label, column = 3, 4  # one cell, recomputed from the graph with the service's latents
    z = latents_for_seeds([seeds[column]], LATENT_DIM)
    (image,) = _session(model_dir / "model.onnx").run(["image"], {"z": z, "label": np.array([label])})
    top, left = PAD + label * (28 + PAD), PAD + column * (28 + PAD)
    np.testing.assert_array_equal(grid[top : top + 28, left : left + 28], image[0, :, :, 0])


def test_model_card(model_dir: Path, run_dir: Path, metrics_file: Path) -> None:
    card = (model_dir / "README.md").read_text()
    manifest = _manifest(model_dir)
    assert f"gan-export {run_dir} --out {model_dir}" in card
    assert manifest["sha256"] in card
    assert "![samples](samples.png)" in card
    metrics = json.loads(metrics_file.read_text())
    fid = f"| FID | {metrics['model']['fid']:.3f} | {metrics['real_floor']['fid']:.3f} |"
    assert fid in card
    assert "product bar: " in card
    assert "| model | cdcgan |" in card and "| trained steps | `5` |" in card  # 160 train images / batch 32


def test_model_card_front_matter_and_use(model_dir: Path) -> None:
    text = (model_dir / "README.md").read_text()
    front, body = text.split("\n---\n", 1)
    meta = yaml.safe_load(front.removeprefix("---\n"))
    assert meta["license"] == "other"  # trained on a test .npz, not MNIST: its own terms apply
    assert "MIT" in meta["license_details"] and meta["library_name"] == "onnx"
    assert meta["pipeline_tag"] == "image-generation" and "fid" in meta["model_results"]
    assert body.startswith("# tiny-cdcgan 0.0.1")
    assert "## Intended use" in body and "## Limitations" in body
    assert "**Augmentation (CAS).**" in body


def test_the_shipped_card_names_mnist_and_its_license() -> None:
    text = (Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan" / "README.md").read_text()
    meta = yaml.safe_load(text.split("\n---\n", 1)[0].removeprefix("---\n"))
    assert meta["license"] == "cc-by-sa-3.0" and meta["datasets"] == ["mnist"]


def test_model_card_shows_other_metrics_as_given() -> None:
    text = card._metrics_text({"fid": 1.5})
    assert '"fid": 1.5' in text and "not `gan-eval` output" in text


def test_fp16_variant(model_dir: Path) -> None:
    variant = _manifest(model_dir)["variants"]["fp16"]
    assert variant["sha256"] == hashlib.sha256((model_dir / variant["file"]).read_bytes()).hexdigest()
    assert variant["verification"]["image_max_abs_diff"] <= variant["verification"]["image_tolerance"]
    assert "note" in variant["verification"]
    z, label = _inputs(7)
    (half,) = _session(model_dir / variant["file"]).run(["image"], {"z": z, "label": label})
    (full,) = _session(model_dir / "model.onnx").run(["image"], {"z": z, "label": label})
    assert half.dtype == np.uint8 and np.abs(half.astype(int) - full.astype(int)).max() <= 2


def test_label_morph_graph(model_dir: Path, run_dir: Path) -> None:
    morph = _manifest(model_dir)["extra_graphs"]["label_morph"]
    assert morph["inputs"] == {"latent": "z", "label_weights": "label_weights"}
    graph = _session(model_dir / morph["file"])
    z, label = _inputs(9)
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[label]
    (morphed,) = graph.run(["image"], {"z": z, "label_weights": one_hot})
    (plain,) = _session(model_dir / "model.onnx").run(["image"], {"z": z, "label": label})
    np.testing.assert_array_equal(morphed, plain)

    mix = np.zeros((9, NUM_CLASSES), dtype=np.float32)
    mix[:, 3], mix[:, 8] = np.linspace(0, 1, 9), np.linspace(1, 0, 9)
    generator, _ = load_generator(run_dir)
    with torch.no_grad():
        want = to_uint8(generator.forward_label_weights(torch.from_numpy(z), torch.from_numpy(mix)).numpy())
    (got,) = graph.run(["image"], {"z": z, "label_weights": mix})
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1

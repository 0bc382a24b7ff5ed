"""``gan-train-encoder``: the encoder trained against a tiny real export, its ONNX parity with PyTorch, the
manifest entry (optional: old manifests stay valid), and the checks that refuse a mismatched generator."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from contracts.model_dir import ENCODER_FILE, ModelDirError, parse_manifest, read_manifest
from evaluation.sources import open_source
from export.card import MANIFEST_LINE, with_encoder_line
from export.encoder import add_encoder, check_encoder_parity, folded_generator, main, same_generator
from export.graph_check import verify_model_dir
from train.encoder import EncoderConfig, train_encoder
from train.models import Architecture

TINY = EncoderConfig(width=4, embed_dim=4, hidden=16, steps=4, batch_size=8, pixel_weight=0.0)


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def test_the_encoder_is_added_verified_and_served_by_onnx_runtime(run_dir, model_copy):
    before = read_manifest(model_copy)
    entry = add_encoder(run_dir, model_copy, replace(TINY, pixel_weight=0.5), log=lambda _: None)
    manifest = verify_model_dir(model_copy)  # sha256, signature and dynamic batch of every graph
    assert manifest.encoder is not None and manifest.encoder.file == ENCODER_FILE
    assert manifest.sha256 == before.sha256 and manifest.version == before.version
    assert entry["verification"]["latent_max_abs_diff"] <= entry["verification"]["latent_tolerance"]
    assert entry["source"] == {"kind": "run", "name": run_dir.name, "generator_sha256": before.sha256}
    assert entry["training"]["steps"] == TINY.steps and entry["recovery"]["images"] > 0
    card = (model_copy / "README.md").read_text()
    assert f"- `{ENCODER_FILE}` (sha256 `{entry['sha256']}`): the encoder of `POST /v1/project`" in card
    assert card.index(ENCODER_FILE) < card.index("- `manifest.json`")  # in the card's Files list
    session = ort.InferenceSession(str(model_copy / ENCODER_FILE), providers=["CPUExecutionProvider"])
    images = np.zeros((3, *manifest.image_shape), np.uint8)
    (latent,) = session.run(["latent"], {"image": images, "label": np.arange(3, dtype=np.int64)})
    assert latent.shape == (3, manifest.latent_dim) and latent.dtype == np.float32


def test_a_new_encoder_replaces_its_line_in_the_card_and_a_card_without_files_is_left_alone():
    manifest = {"image_shape": [28, 28, 1], "latent_dim": 8}
    entry = {"file": "encoder.onnx", "sha256": "b" * 64, "inputs": {"image": "image", "label": "label"},
             "output": "latent", "recovery": {"latent_mse": 0.25}}  # fmt: skip
    stale = f"- `encoder.onnx` (sha256 `{'a' * 64}`): old"
    old = f"# m\n\n## Files\n\n- `model.onnx`: x\n{stale}\n{MANIFEST_LINE}\n"
    card = with_encoder_line(old, entry, manifest)
    assert card.count("encoder.onnx") == 1 and "b" * 64 in card and "latent MSE 0.250" in card
    assert card.splitlines()[-1] == MANIFEST_LINE and card.endswith("\n")
    assert with_encoder_line("# no files\n", entry, manifest) == "# no files\n"


def test_parity_is_checked_against_pytorch(run_dir, model_copy):
    add_encoder(run_dir, model_copy, TINY, log=lambda _: None)
    source = open_source(model_copy)
    arch = Architecture(latent_dim=source.latent_dim, num_classes=source.num_classes)
    other, _ = train_encoder(source.generate, arch, EncoderConfig(**{**TINY.to_dict(), "seed": 1}))
    with pytest.raises(ModelDirError, match="differs from PyTorch"):
        check_encoder_parity(model_copy / ENCODER_FILE, other, source)


def test_training_is_deterministic_by_seed(model_dir):
    source = open_source(model_dir)
    arch = Architecture(latent_dim=source.latent_dim, num_classes=source.num_classes)
    first, _ = train_encoder(source.generate, arch, TINY)
    second, _ = train_encoder(source.generate, arch, TINY)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_model_directory_alone_gives_the_pixel_loss_a_folded_generator(model_copy):
    folded = folded_generator(model_copy)
    assert folded is not None
    config = EncoderConfig(**{**TINY.to_dict(), "pixel_weight": 1.0})
    entry = add_encoder(model_copy, model_copy, config, log=lambda _: None)  # checks folded == model.onnx
    assert entry["source"]["kind"] == "model" and entry["training"]["pixel_weight"] == 1.0


def test_another_generator_is_refused(run_dir, model_copy, capsys):
    source, served = open_source(run_dir), open_source(model_copy)
    assert same_generator(source, served) <= 1
    inverted = replace(served, generate=lambda z, label: 255 - served.generate(z, label))
    with pytest.raises(ModelDirError, match="different generators"):
        same_generator(source, inverted)
    shipped = Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan"
    assert main([str(shipped), "--out", str(model_copy), "--steps", "1"]) == 2
    assert "latent_dim" in capsys.readouterr().err
    assert not (model_copy / ENCODER_FILE).exists()


def test_manifests_without_an_encoder_stay_valid_and_a_bad_entry_is_refused(model_dir):
    raw = json.loads((model_dir / "manifest.json").read_text())
    assert parse_manifest(json.dumps(raw), "m").encoder is None
    raw["encoder"] = {"file": ENCODER_FILE, "sha256": "0" * 64, "inputs": {"image": "image"}}
    with pytest.raises(ModelDirError, match=r'encoder.inputs must name "image" and "label"'):
        parse_manifest(json.dumps(raw), "m")
    raw["encoder"] = {"file": "../encoder.onnx", "sha256": "0" * 64, "inputs": {"image": "i", "label": "l"}}
    with pytest.raises(ModelDirError, match="file name inside the model directory"):
        parse_manifest(json.dumps(raw), "m")


@pytest.mark.parametrize(
    "flags", [["--steps", "0"], ["--batch-size", "0"], ["--threads", "0"], ["--width", "0"], ["--lr", "-1"]]
)
def test_bad_settings_are_one_line_before_any_work(flags, tmp_path, capsys):
    out = tmp_path / "model"  # never read: the flags are refused first
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "run"), "--out", str(out), *flags])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()[-1:]
    assert line.startswith("gan-train-encoder: error: argument " + flags[0]), line
    assert not out.exists()

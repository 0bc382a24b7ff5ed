"""``export.graph_check.verify_model_dir`` rejects damaged or inconsistent model directories, clearly."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from contracts.files import sha256_file
from contracts.model_dir import ModelDirError, read_manifest
from export.graph_check import verify_model_dir


@pytest.fixture
def copy_dir(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def _edit_manifest(directory: Path, edit: Callable[[dict], None]) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_corrupted_onnx_is_rejected_by_sha256(copy_dir: Path) -> None:
    path = copy_dir / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match=r"model\.onnx: sha256 mismatch"):
        verify_model_dir(copy_dir)


def test_truncated_onnx_with_matching_sha256_is_rejected_as_invalid(copy_dir: Path) -> None:
    path = copy_dir / "model.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    _edit_manifest(copy_dir, lambda m: m.update(sha256=sha256_file(path)))
    with pytest.raises(ModelDirError, match="not a valid ONNX model"):
        verify_model_dir(copy_dir)


def test_corrupted_variant_is_rejected(copy_dir: Path) -> None:
    (copy_dir / "model.fp16.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelDirError, match=r"model\.fp16\.onnx: sha256 mismatch"):
        verify_model_dir(copy_dir)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("latent_dim", 17, r"input 'z' has shape \[N, 16\], manifest implies \[N, 17\]"),
        (
            "image_shape",
            [32, 32, 1],
            r"output 'image' has shape \[N, 28, 28, 1\], manifest implies \[N, 32, 32, 1\]",
        ),
        ("inputs", {"latent": "latent", "label": "label"}, r"graph inputs are \['label', 'z'\]"),
    ],
)
def test_manifest_graph_mismatch_is_rejected(copy_dir: Path, field: str, value: object, message: str) -> None:
    _edit_manifest(copy_dir, lambda m: m.update({field: value}))
    with pytest.raises(ModelDirError, match=message):
        verify_model_dir(copy_dir)


def test_label_morph_mismatch_is_rejected(copy_dir: Path) -> None:
    def more_classes(m: dict) -> None:
        m.update(num_classes=11, labels=[*m["labels"], "10"])

    _edit_manifest(copy_dir, more_classes)
    with pytest.raises(ModelDirError, match=r"label_morph\.onnx: input 'label_weights' has shape \[N, 10\]"):
        verify_model_dir(copy_dir)


def test_fixed_batch_size_is_rejected(copy_dir: Path) -> None:
    path = copy_dir / "model.onnx"
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # replaces the symbolic "N"
    onnx.save(model, str(path))
    _edit_manifest(copy_dir, lambda m: m.update(sha256=sha256_file(path)))
    with pytest.raises(ModelDirError, match="fixed batch size 1; it must be dynamic"):
        verify_model_dir(copy_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("latent_dim"), "field 'latent_dim': Field required"),
        (lambda m: m.update(latent_dim=0), "field 'latent_dim': Input should be greater than or equal to 1"),
        (lambda m: m.update(labels=["a"]), "labels has 1 names but num_classes is 10"),
        (lambda m: m.update(image_shape=[28, 28]), "field 'image_shape.2': Field required"),
        (lambda m: m.update(output={**m["output"], "dtype": "float32"}), "field 'output': Value error"),
        (lambda m: m.update(file="../model.onnx"), "field 'file': .* a file name inside the model directory"),
    ],
)
def test_bad_manifest_fields_are_rejected(copy_dir: Path, edit: Callable[[dict], None], message: str) -> None:
    _edit_manifest(copy_dir, edit)
    with pytest.raises(ModelDirError, match=message):
        verify_model_dir(copy_dir)


def test_a_field_gan_export_writes_is_required_of_a_complete_manifest(copy_dir: Path) -> None:
    _edit_manifest(copy_dir, lambda m: m.pop("created"))
    assert read_manifest(copy_dir).created is None  # a reader does not need it
    with pytest.raises(ModelDirError, match=r"missing field\(s\) \['created'\]"):
        verify_model_dir(copy_dir)


def test_unreadable_or_missing_manifest(copy_dir: Path, tmp_path: Path) -> None:
    (copy_dir / "manifest.json").write_text("{not json")
    with pytest.raises(ModelDirError, match=r"manifest\.json: not readable JSON"):
        read_manifest(copy_dir)
    with pytest.raises(ModelDirError, match=r"manifest\.json not found"):
        read_manifest(tmp_path / "nowhere")


def test_missing_model_file(copy_dir: Path) -> None:
    (copy_dir / "model.onnx").unlink()
    with pytest.raises(ModelDirError, match=r"model\.onnx not found"):
        verify_model_dir(copy_dir)

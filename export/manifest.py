"""Reading and checking a model directory: ``manifest.json`` against the ONNX graphs it describes.

Free of torch on purpose (numpy-free even): json, hashlib and onnx only, so anything that only needs to check
a shipped model directory can use it without the training stack.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import onnx

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
FP16_FILE = "model.fp16.onnx"
LABEL_MORPH_FILE = "label_morph.onnx"
SAMPLES_FILE = "samples.png"
CARD_FILE = "README.md"

LATENT_INPUT = "z"
LABEL_INPUT = "label"
LABEL_WEIGHTS_INPUT = "label_weights"
IMAGE_OUTPUT = "image"
OUTPUT_SPEC = {"name": IMAGE_OUTPUT, "dtype": "uint8", "layout": "NHWC", "range": [0, 255]}

# The fields docs/design.md fixes; the ones the service reads come first.
SERVICE_FIELDS = (
    "name",
    "version",
    "file",
    "sha256",
    "num_classes",
    "labels",
    "latent_dim",
    "image_shape",
    "inputs",
    "output",
)
REQUIRED_FIELDS = (
    *SERVICE_FIELDS,
    "normalisation",
    "opset",
    "conditional",
    "training",
    "data_split",
    "verification",
    "metrics",
    "created",
)

_ELEM_NAMES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
}


class ManifestError(ValueError):
    """A model directory is incomplete or inconsistent; the message names the file and the field."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(model_dir: str | Path, manifest: dict) -> Path:
    path = Path(model_dir) / MANIFEST_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(model_dir: str | Path) -> dict:
    """Parse ``manifest.json`` and check that every field is present and well-typed (not the graph itself)."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path} not found")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: must hold a JSON object, got {type(manifest).__name__}")
    missing = [field for field in REQUIRED_FIELDS if field not in manifest]
    if missing:
        raise ManifestError(f"{path}: missing field(s) {missing}")
    _check_fields(path, manifest)
    return manifest


def verify_model_dir(model_dir: str | Path) -> dict:
    """Read the manifest and check every graph it names: file present, sha256, ONNX validity, and that the
    graph's inputs/outputs match the manifest's names, dtypes, ``latent_dim``, ``num_classes`` and
    ``image_shape``, with a dynamic batch axis. Returns the manifest."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    latent, label = manifest["inputs"]["latent"], manifest["inputs"]["label"]
    expected = {latent: ("float32", [None, manifest["latent_dim"]]), label: ("int64", [None])}
    _check_graph(model_dir, manifest["file"], manifest["sha256"], expected, manifest)
    for key, variant in manifest.get("variants", {}).items():
        _check_graph(model_dir, variant["file"], variant["sha256"], expected, manifest, f"variants.{key}")
    morph = manifest.get("extra_graphs", {}).get("label_morph")
    if morph is not None:
        inputs = morph["inputs"]
        morph_expected = {
            inputs["latent"]: ("float32", [None, manifest["latent_dim"]]),
            inputs["label_weights"]: ("float32", [None, manifest["num_classes"]]),
        }
        _check_graph(
            model_dir, morph["file"], morph["sha256"], morph_expected, manifest, "extra_graphs.label_morph"
        )
    return manifest


def graph_signature(model: onnx.ModelProto) -> dict[str, dict[str, tuple[str, list[int | None]]]]:
    """``{"inputs": {name: (dtype, shape)}, "outputs": {...}}``; a symbolic/unknown dimension is ``None``."""

    def describe(values: Any) -> dict[str, tuple[str, list[int | None]]]:
        out = {}
        for value in values:
            tensor = value.type.tensor_type
            dtype = _ELEM_NAMES.get(
                tensor.elem_type, onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
            )
            shape = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
            out[value.name] = (dtype, shape)
        return out

    initializers = {init.name for init in model.graph.initializer}
    return {
        "inputs": describe(v for v in model.graph.input if v.name not in initializers),
        "outputs": describe(model.graph.output),
    }


def _check_graph(
    model_dir: Path, file: str, sha256: str, expected_inputs: dict, manifest: dict, where: str = "file"
) -> None:
    path = model_dir / file
    if Path(file).name != file:
        raise ManifestError(
            f"{model_dir / MANIFEST_FILE}: '{where}' must be a file name inside the directory, got {file!r}"
        )
    if not path.is_file():
        raise ManifestError(f"{path} not found (named by {MANIFEST_FILE} '{where}')")
    actual = sha256_file(path)
    if actual != sha256:
        raise ManifestError(
            f"{path}: sha256 mismatch: manifest says {sha256}, file has {actual} (corrupted or replaced file)"
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... for a damaged file
        raise ManifestError(f"{path}: not a valid ONNX model ({exc})") from exc
    signature = graph_signature(model)
    height, width, channels = manifest["image_shape"]
    expected_outputs = {manifest["output"]["name"]: ("uint8", [None, height, width, channels])}
    _compare(path, "input", signature["inputs"], expected_inputs)
    _compare(path, "output", signature["outputs"], expected_outputs)


def _compare(path: Path, kind: str, actual: dict, expected: dict) -> None:
    if set(actual) != set(expected):
        raise ManifestError(f"{path}: graph {kind}s are {sorted(actual)}, manifest says {sorted(expected)}")
    for name, (dtype, shape) in expected.items():
        got_dtype, got_shape = actual[name]
        if got_dtype != dtype:
            raise ManifestError(f"{path}: {kind} '{name}' has dtype {got_dtype}, manifest implies {dtype}")
        if len(got_shape) != len(shape) or got_shape[1:] != shape[1:]:
            raise ManifestError(
                f"{path}: {kind} '{name}' has shape {_show(got_shape)}, manifest implies {_show(shape)}"
            )
        if got_shape[0] is not None:
            raise ManifestError(
                f"{path}: {kind} '{name}' has a fixed batch size {got_shape[0]}; it must be dynamic"
            )


def _show(shape: list[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def _check_fields(path: Path, m: dict) -> None:
    def fail(field: str, wanted: str) -> None:
        raise ManifestError(f"{path}: field '{field}' must be {wanted}, got {m.get(field)!r}")

    for field in ("name", "version", "file", "sha256", "created"):
        if not isinstance(m[field], str) or not m[field]:
            fail(field, "a non-empty string")
    if len(m["sha256"]) != 64:
        fail("sha256", "a 64-character hex digest")
    for field in ("num_classes", "latent_dim", "opset"):
        if not isinstance(m[field], int) or isinstance(m[field], bool) or m[field] < 1:
            fail(field, "a positive integer")
    if not isinstance(m["labels"], list) or len(m["labels"]) != m["num_classes"]:
        fail("labels", f"a list of num_classes ({m['num_classes']}) names")
    shape = m["image_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
        fail("image_shape", "[H, W, C] with positive integers")
    inputs = m["inputs"]
    if not (
        isinstance(inputs, dict)
        and isinstance(inputs.get("latent"), str)
        and isinstance(inputs.get("label"), str)
    ):
        fail("inputs", '{"latent": NAME, "label": NAME}')
    output = m["output"]
    if (
        not isinstance(output, dict)
        or {k: output.get(k) for k in OUTPUT_SPEC if k != "name"}
        != {k: v for k, v in OUTPUT_SPEC.items() if k != "name"}
        or not isinstance(output.get("name"), str)
    ):
        fail("output", f"{OUTPUT_SPEC} (any name)")
    if not isinstance(m["conditional"], bool):
        fail("conditional", "true or false")
    if m["metrics"] is not None and not isinstance(m["metrics"], dict):
        fail("metrics", "an object or null")

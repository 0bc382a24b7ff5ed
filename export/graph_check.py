"""Checking the graphs of a model directory against its manifest: every file it names is present, matches its
sha256, is a valid ONNX model, and takes and gives the tensors the manifest says, with a dynamic batch axis.

The manifest itself is read by ``contracts.model_dir``; this needs onnx, so it lives with the exporter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from contracts.model_dir import (
    LABEL_MORPH,
    LATENT_OUTPUT,
    GraphEntry,
    Manifest,
    ModelDirError,
    read_manifest,
    verified_graph,
)

_ELEM_NAMES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
}

Expected = dict[str, tuple[str, list[int | None]]]


def verify_model_dir(model_dir: str | Path) -> Manifest:
    """Read the complete manifest and check every graph it names (see the module's docstring)."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir, complete=True)
    latent, label = manifest.inputs["latent"], manifest.inputs["label"]
    main_inputs = {latent: ("float32", [None, manifest.latent_dim]), label: ("int64", [None])}
    for where, entry in manifest.graph_entries():
        expected = main_inputs
        if where == f"extra_graphs.{LABEL_MORPH}":
            inputs = entry.inputs or {}
            expected = {
                inputs["latent"]: ("float32", [None, manifest.latent_dim]),
                inputs["label_weights"]: ("float32", [None, manifest.num_classes]),
            }
        elif where == "encoder":
            _check_encoder(model_dir, entry, manifest)
            continue
        elif where.startswith("extra_graphs."):  # a graph this exporter does not write: present and intact
            verified_graph(model_dir, entry, where)
            continue
        _check_graph(model_dir, where, entry, expected, manifest)
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


def _check_encoder(model_dir: Path, entry: GraphEntry, manifest: Manifest) -> None:
    """``encoder``: image uint8 [N, H, W, C] + label int64 [N] → latent float32 [N, latent_dim]."""
    inputs = entry.inputs or {}
    output = (entry.model_extra or {}).get("output", LATENT_OUTPUT)
    expected = {
        inputs["image"]: ("uint8", [None, *manifest.image_shape]),
        inputs["label"]: ("int64", [None]),
    }
    _check_graph(
        model_dir, "encoder", entry, expected, manifest, {output: ("float32", [None, manifest.latent_dim])}
    )


def _check_graph(
    model_dir: Path,
    where: str,
    entry: GraphEntry,
    expected_inputs: Expected,
    manifest: Manifest,
    expected_outputs: Expected | None = None,
) -> None:
    path = verified_graph(model_dir, entry, where)
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... for a damaged file
        raise ModelDirError(f"{path}: not a valid ONNX model ({exc})") from exc
    signature = graph_signature(model)
    height, width, channels = manifest.image_shape
    if expected_outputs is None:
        expected_outputs = {manifest.output.name: ("uint8", [None, height, width, channels])}
    _compare(path, "input", signature["inputs"], expected_inputs)
    _compare(path, "output", signature["outputs"], expected_outputs)


def _compare(path: Path, kind: str, actual: dict, expected: dict) -> None:
    if set(actual) != set(expected):
        raise ModelDirError(f"{path}: graph {kind}s are {sorted(actual)}, manifest says {sorted(expected)}")
    for name, (dtype, shape) in expected.items():
        got_dtype, got_shape = actual[name]
        if got_dtype != dtype:
            raise ModelDirError(f"{path}: {kind} '{name}' has dtype {got_dtype}, manifest implies {dtype}")
        if len(got_shape) != len(shape) or got_shape[1:] != shape[1:]:
            raise ModelDirError(
                f"{path}: {kind} '{name}' has shape {_show(got_shape)}, manifest implies {_show(shape)}"
            )
        if got_shape[0] is not None:
            raise ModelDirError(
                f"{path}: {kind} '{name}' has a fixed batch size {got_shape[0]}; it must be dynamic"
            )


def _show(shape: list[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"

"""The Triton model repository (``export.triton``): its config.pbtxt, parsed by Triton's own ``ModelConfig``
schema (shipped in tritonclient), agrees with the ONNX graph, and the graph is copied byte for byte."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import onnx
import pytest

from contracts.files import sha256_file
from contracts.model_dir import ModelDirError, read_manifest
from export.cli import main as gan_export
from export.graph_check import graph_signature
from export.triton import TritonOptions, main, write_triton_repo

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan"
TRITON_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8"}


def parse_config(path: Path):
    """config.pbtxt as Triton's ``inference.ModelConfig`` message (an unknown field or enum is an error)."""
    tritonclient = pytest.importorskip("tritonclient")
    text_format = pytest.importorskip("google.protobuf.text_format")
    source = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    # the module alone: tritonclient.grpc's __init__ needs grpcio, which only its grpc extra brings
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return text_format.Parse(path.read_text(), module.ModelConfig()), module


def check_repo(model_dir: Path, target: Path, options: TritonOptions) -> None:
    manifest = read_manifest(model_dir)
    copy = target / "1" / "model.onnx"
    assert sha256_file(copy) == manifest.sha256 == sha256_file(model_dir / manifest.file)
    signature = graph_signature(onnx.load(str(copy), load_external_data=False))
    config, schema = parse_config(target / "config.pbtxt")
    assert config.name == target.name and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == options.max_batch_size > 0
    for declared, (kind, graph) in [(config.input, ("inputs", signature["inputs"])),
                                    (config.output, ("outputs", signature["outputs"]))]:  # fmt: skip
        assert [t.name for t in declared] == list(graph), kind
        for tensor in declared:
            dtype, shape = graph[tensor.name]
            assert shape[0] is None, f"{tensor.name}: the batch axis must be dynamic"
            assert tensor.data_type == schema.DataType.Value(TRITON_TYPES[dtype])
            dims = [-1 if d is None else d for d in shape[1:]]  # max_batch_size > 0: no batch axis in dims
            if dims:
                assert list(tensor.dims) == dims and not tensor.HasField("reshape"), tensor.name
            else:  # [N]: declared [1] and reshaped to [] (what the graph takes)
                assert list(tensor.dims) == [1] and tensor.HasField("reshape"), tensor.name
                assert list(tensor.reshape.shape) == []
    assert [t.name for t in config.input] == [manifest.inputs["latent"], manifest.inputs["label"]]
    image = config.output[0]
    assert image.name == manifest.output.name and list(image.dims) == list(manifest.image_shape)
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size)[-1] == options.max_batch_size
    assert batching.max_queue_delay_microseconds == options.max_queue_delay_us
    (group,) = config.instance_group
    assert group.count == options.instance_count
    assert group.kind == schema.ModelInstanceGroup.Kind.Value(options.kind)
    assert config.parameters["model_version"].string_value == manifest.version


def test_triton_repo_of_the_shipped_model(tmp_path: Path) -> None:
    options = TritonOptions(max_batch_size=32, instance_count=2, kind="KIND_CPU", max_queue_delay_us=500)
    target = write_triton_repo(SHIPPED, tmp_path / "repo", options)
    assert target == tmp_path / "repo" / "mnist-cdcgan"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "1",
        "1/model.onnx",
        "config.pbtxt",
    ]
    check_repo(SHIPPED, target, options)
    with pytest.raises(FileExistsError):
        write_triton_repo(SHIPPED, tmp_path / "repo", options)
    (target / "stale").write_text("x")
    write_triton_repo(SHIPPED, tmp_path / "repo", TritonOptions(overwrite=True))
    assert not (target / "stale").exists()
    check_repo(SHIPPED, target, TritonOptions())


def test_triton_repo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    argv = [str(SHIPPED), "--repo", str(repo), "--name", "gan", "--max-batch-size", "8", "--kind", "KIND_GPU"]
    assert main(argv) == 0
    check_repo(SHIPPED, repo / "gan", TritonOptions(max_batch_size=8, kind="KIND_GPU"))
    assert main(argv) == 1 and "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--max-batch-size", "0"]) == 1
    assert "max_batch_size" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED, broken)
    (broken / "model.onnx").write_bytes(b"not the graph")
    assert main([str(broken), "--repo", str(repo), "--overwrite"]) == 1
    assert "sha256" in capsys.readouterr().err
    with pytest.raises(ModelDirError):
        write_triton_repo(broken, repo, TritonOptions(overwrite=True))


@pytest.mark.parametrize("name", ["../escaped", "a/b", ".hidden"])
def test_triton_repo_names_stay_inside_the_repository(name: str, tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(ValueError, match="is not allowed"):
        write_triton_repo(SHIPPED, repo, TritonOptions(name=name))
    assert main([str(SHIPPED), "--repo", str(repo), "--name", name]) == 1
    assert "is not allowed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_gan_export_writes_the_triton_repo(run_dir: Path, tmp_path: Path) -> None:
    """``gan-export --triton-repo``: the repository holds the graph the model directory was just given."""
    out, repo = tmp_path / "m", tmp_path / "repo"
    argv = [str(run_dir), "--out", str(out), "--no-label-morph", "--sample-seeds", "0-1"]
    assert gan_export([*argv, "--triton-repo", str(repo)]) == 0
    check_repo(out, repo / "m", TritonOptions())
    card = (out / "README.md").read_text()
    assert "gan-export" in card and "--triton-repo" not in card  # the card's remake command: the model only

"""A Triton Inference Server model repository from a model directory, so the very graph the service runs
(``model.onnx``, sha256-verified) runs on Triton unchanged:

```
REPO/NAME/config.pbtxt   # platform onnxruntime_onnx, inputs/outputs from the graph, max_batch_size,
                         # dynamic_batching (preferred sizes: the service's powers of two), instance_group
REPO/NAME/1/model.onnx   # a byte-for-byte copy of the model directory's model.onnx
```

Dims in the config exclude the batch axis (``max_batch_size`` > 0 lets Triton batch). The ``label`` input is
[N] in the graph, so [] without the batch axis, which Triton does not accept as ``dims``: it is declared
``dims: [1]`` with ``reshape: { shape: [] }``, and Triton clients send it as [N, 1] (the graph still gets
[N]). ``python -m export.triton MODEL_DIR --repo DIR`` or ``gan-export ... --triton-repo DIR``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx

from contracts.buckets import batch_buckets
from contracts.files import atomic_write_text, sha256_file
from contracts.model_dir import ModelDirError, verified_graph
from export.graph_check import graph_signature, verify_model_dir

CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"  # the file name Triton's onnxruntime backend looks for
VERSION = "1"  # Triton versions are integers; the manifest's own version is kept in the config's parameters
PLATFORM = "onnxruntime_onnx"
KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8"}
# A model name is one directory of the repository (REPO/NAME) and one segment of /v2/models/NAME/...: no
# separators, no "..", no hidden directory.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
NAME_RULE = "letters, digits, '_', '-' and '.', not starting with '.', at most 128 characters"


def check_model_name(name: str) -> str:
    """``name`` when it is a safe model name (``SAFE_NAME``), else ``ValueError`` saying the rule."""
    if not SAFE_NAME.fullmatch(name):
        raise ValueError(f"model name {name!r} is not allowed: use {NAME_RULE}")
    return name


@dataclass(frozen=True)
class TritonOptions:
    max_batch_size: int = 64  # the service's default GAN_MAX_BATCH
    instance_count: int = 1
    kind: str = "KIND_AUTO"  # Triton picks GPU when it has one
    max_queue_delay_us: int = 2000  # the service's default GAN_MAX_WAIT_MS, in microseconds
    name: str | None = None  # default: the manifest's name
    overwrite: bool = False


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch axis; -1 for a dynamic one
    reshape: tuple[int, ...] | None = None  # the graph's shape when dims had to differ (a [N] tensor)


def config_tensors(model: onnx.ModelProto) -> tuple[list[Tensor], list[Tensor]]:
    """The graph's inputs and outputs as Triton config entries (every tensor must have a dynamic batch axis
    first: Triton batches along it)."""
    signature = graph_signature(model)

    def convert(kind: str) -> list[Tensor]:
        tensors = []
        for name, (dtype, shape) in signature[kind].items():
            if not shape or shape[0] is not None:
                raise ModelDirError(f"{kind[:-1]} {name!r} has shape {shape}: no dynamic batch axis first")
            if dtype not in TRITON_TYPES:
                raise ModelDirError(f"{kind[:-1]} {name!r} has dtype {dtype}, which this writer does not map")
            dims = tuple(-1 if d is None else d for d in shape[1:])
            if dims:
                tensors.append(Tensor(name, TRITON_TYPES[dtype], dims))
            else:  # [N]: Triton wants at least one dim
                tensors.append(Tensor(name, TRITON_TYPES[dtype], (1,), reshape=()))
        return tensors

    return convert("inputs"), convert("outputs")


def render_config(
    name: str, inputs: list[Tensor], outputs: list[Tensor], options: TritonOptions, model_version: str
) -> str:
    """``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``)."""

    def tensor(t: Tensor) -> str:
        lines = [f'    name: "{t.name}"', f"    data_type: {t.data_type}", f"    dims: {_list(t.dims)}"]
        if t.reshape is not None:
            lines.append(f"    reshape: {{ shape: {_list(t.reshape)} }}")
        return "  {\n" + "\n".join(lines) + "\n  }"

    preferred = [size for size in batch_buckets(options.max_batch_size) if size > 1]
    return "\n".join(
        [
            f'name: "{name}"',
            f'platform: "{PLATFORM}"',
            f"max_batch_size: {options.max_batch_size}",
            "input [\n" + ",\n".join(tensor(t) for t in inputs) + "\n]",
            "output [\n" + ",\n".join(tensor(t) for t in outputs) + "\n]",
            "dynamic_batching {",
            f"  preferred_batch_size: {_list(preferred)}",
            f"  max_queue_delay_microseconds: {options.max_queue_delay_us}",
            "}",
            f"instance_group [ {{ count: {options.instance_count} kind: {options.kind} }} ]",
            'parameters { key: "model_version" value: { string_value: "' + model_version + '" } }',
            "",
        ]
    )


def _list(values: tuple[int, ...] | list[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]" if values else "[ ]"


def write_triton_repo(model_dir: str | Path, repo: str | Path, options: TritonOptions | None = None) -> Path:
    """Write ``repo/NAME/config.pbtxt`` and ``repo/NAME/1/model.onnx`` from a verified model directory;
    returns ``repo/NAME``. Raises ``ModelDirError`` (a bad model directory), ``FileExistsError`` or
    ``ValueError`` (options)."""
    options = options or TritonOptions()
    if options.max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {options.max_batch_size}")
    if options.instance_count < 1:
        raise ValueError(f"instance_count must be at least 1, got {options.instance_count}")
    if options.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {options.kind!r}")
    if options.max_queue_delay_us < 0:
        raise ValueError(f"max_queue_delay_us must be >= 0, got {options.max_queue_delay_us}")
    model_dir = Path(model_dir)
    manifest = verify_model_dir(model_dir)  # every graph present, intact, and as the manifest says
    entry = manifest.graph()
    graph = verified_graph(model_dir, entry)
    inputs, outputs = config_tensors(onnx.load(str(graph), load_external_data=False))
    name = check_model_name(options.name or manifest.name)  # never a path out of the repository
    target = Path(repo) / name
    if target.exists():
        if not options.overwrite:
            raise FileExistsError(f"{target} exists (pass overwrite to replace it)")
        shutil.rmtree(target)
    (target / VERSION).mkdir(parents=True)
    copy = shutil.copyfile(graph, target / VERSION / MODEL_FILE)
    if sha256_file(copy) != entry.sha256:
        raise ModelDirError(f"{copy}: the copy's sha256 differs from the manifest's {entry.sha256}")
    atomic_write_text(target / CONFIG_FILE, render_config(name, inputs, outputs, options, manifest.version))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.triton",
        description="Write a Triton model repository entry (config.pbtxt, 1/model.onnx) from a model dir.",
    )
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a gan-export model directory")
    parser.add_argument("--repo", type=Path, required=True, help="the Triton model repository to write into")
    parser.add_argument("--name", help="the model's name in the repository (default: the manifest's)")
    parser.add_argument("--overwrite", action="store_true", help="replace REPO/NAME if it exists")
    defaults = TritonOptions()
    for flag, dest, kwargs in [
        ("--max-batch-size", "max_batch_size", {"type": int, "help": "Triton's max_batch_size"}),
        ("--instances", "instance_count", {"type": int, "help": "instance_group count"}),
        ("--kind", "kind", {"choices": KINDS, "help": "instance_group kind"}),
        ("--max-queue-delay-us", "max_queue_delay_us", {"type": int, "help": "dynamic_batching delay"}),
    ]:
        default = getattr(defaults, dest)
        kwargs["help"] += " (default: %(default)s)"
        parser.add_argument(flag, dest=dest, default=default, **kwargs)  # type: ignore[arg-type]
    args = parser.parse_args(argv)
    options = TritonOptions(
        max_batch_size=args.max_batch_size,
        instance_count=args.instance_count,
        kind=args.kind,
        max_queue_delay_us=args.max_queue_delay_us,
        name=args.name,
        overwrite=args.overwrite,
    )
    try:
        target = write_triton_repo(args.model_dir, args.repo, options)
    except (ModelDirError, FileExistsError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target}/ ({CONFIG_FILE}, {VERSION}/{MODEL_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

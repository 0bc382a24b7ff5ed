"""``gan-export RUN_DIR --out models/NAME``: a run's generator → a verified, servable model directory."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from contracts.model_dir import ModelDirError
from contracts.run_dir import RunDirError
from export.build import ExportOptions, export_run, read_metrics
from export.graph import DEFAULT_OPSET, ExportError
from export.verify import FLOAT_TOLERANCE, IMAGE_TOLERANCE, Tolerance, VerificationError

MIN_OPSET = 17  # ConvTranspose/Round/Clip as used here; older opsets are not tested


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0-9`` or ``0,3,7`` or ``0-4,10``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            seeds += range(int(first), int(last or first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like '0-9' or '0,3,7', got {text!r}") from None
    if not seeds or min(seeds) < 0 or max(seeds) > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"seeds must be in [0, 2**32 - 1], got {text!r}")
    return tuple(seeds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-export",
        description="Export a training run's generator to ONNX (uint8 NHWC output, dynamic batch), verify it "
        "against PyTorch with ONNX Runtime, and write a model directory: model.onnx, manifest.json, "
        "samples.png, README.md.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a gan-train run directory")
    parser.add_argument(
        "--out", type=Path, required=True, help="model directory to write, e.g. models/mnist-cdcgan"
    )
    parser.add_argument("--name", help="model name in the manifest (default: the --out directory's name)")
    parser.add_argument(
        "--version", default="1.0.0", help="model version in the manifest (default: %(default)s)"
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, at least {MIN_OPSET} (default: %(default)s, the exporter's native opset)",
    )
    parser.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (float16 inside)")
    parser.add_argument(
        "--no-label-morph",
        dest="label_morph",
        action="store_false",
        help="do not write label_morph.onnx for a conditional generator",
    )
    metrics = parser.add_mutually_exclusive_group()
    metrics.add_argument("--metrics", type=Path, help="metrics.json from gan-eval to embed in the manifest")
    metrics.add_argument(
        "--evaluate",
        action="store_true",
        help="embed gan-eval metrics of the exported model.onnx (needs models/mnist-classifier)",
    )
    parser.add_argument("--eval-n", type=int, help="images --evaluate generates (default: gan-eval's)")
    parser.add_argument(
        "--classifier", type=Path, help="classifier directory for --evaluate (default: gan-eval's)"
    )
    parser.add_argument(
        "--sample-seeds",
        type=parse_seeds,
        default="0-9",
        help="columns of samples.png (default: %(default)s)",
    )
    parser.add_argument(
        "--image-tolerance",
        type=int,
        default=IMAGE_TOLERANCE,
        help="max uint8 difference ONNX Runtime vs PyTorch (default: %(default)s)",
    )
    parser.add_argument(
        "--float-tolerance",
        type=float,
        default=FLOAT_TOLERANCE,
        help="max difference of the float output before quantisation (default: %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def remake_command(args: argparse.Namespace, name: str) -> str:
    parts = [
        "gan-export",
        str(args.run_dir),
        "--out",
        str(args.out),
        "--name",
        name,
        "--version",
        args.version,
    ]
    parts += ["--opset", str(args.opset)]
    if args.fp16:
        parts.append("--fp16")
    if not args.label_morph:
        parts.append("--no-label-morph")
    if args.metrics:
        parts += ["--metrics", str(args.metrics)]
    if args.evaluate:
        parts.append("--evaluate")
        parts += ["--eval-n", str(args.eval_n)] if args.eval_n else []
        parts += ["--classifier", str(args.classifier)] if args.classifier else []
    if args.sample_seeds != parse_seeds("0-9"):
        parts += ["--sample-seeds", ",".join(str(seed) for seed in args.sample_seeds)]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be at least {MIN_OPSET}, got {args.opset}")
    if args.image_tolerance < 0 or args.float_tolerance < 0:
        parser.error("--image-tolerance and --float-tolerance must be >= 0")
    if args.eval_n is not None and args.eval_n < 1:
        parser.error(f"--eval-n must be at least 1, got {args.eval_n}")
    name = args.name or args.out.resolve().name
    try:
        options = ExportOptions(
            name=name,
            version=args.version,
            opset=args.opset,
            fp16=args.fp16,
            label_morph=args.label_morph,
            metrics=read_metrics(args.metrics) if args.metrics else None,
            sample_seeds=args.sample_seeds,
            tolerance=Tolerance(image=args.image_tolerance, float=args.float_tolerance),
            overwrite=args.overwrite,
            evaluate=args.evaluate,
            eval_n=args.eval_n,
            classifier_dir=args.classifier,
            command=remake_command(args, name),
        )
        manifest = export_run(args.run_dir, args.out, options)
    except (
        RunDirError,
        ExportError,
        VerificationError,
        ModelDirError,
        FileExistsError,
        ValueError,
    ) as exc:
        print(f"gan-export: error: {exc}", file=sys.stderr)
        return 1
    print(summary(manifest, args.out))
    return 0


def summary(manifest: dict, out: Path) -> str:
    v = manifest["verification"]
    size = (out / manifest["file"]).stat().st_size
    lines = [
        f"wrote {out}/ ({manifest['name']} {manifest['version']}, {manifest['file']} {size / 1e6:.2f} MB, "
        f"opset {manifest['opset']})",
        f"  verified vs PyTorch at batch sizes {v['batch_sizes']}: "
        f"uint8 max abs diff {v['image_max_abs_diff']}, float max abs diff {v['float_max_abs_diff']:.2e}",
    ]
    for key, variant in manifest.get("variants", {}).items():
        lines.append(
            f"  {key}: {variant['file']} uint8 max abs diff {variant['verification']['image_max_abs_diff']}"
            f" ({variant['verification']['note']})"
        )
    morph = manifest.get("extra_graphs", {}).get("label_morph")
    if morph:
        mv = morph["verification"]
        lines.append(
            f"  label_morph: {morph['file']} uint8 max abs diff {mv['image_max_abs_diff']}, one-hot vs "
            f"model.onnx {mv['one_hot_vs_model_max_abs_diff']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

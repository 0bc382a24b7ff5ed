"""``gan-export RUN_DIR --out models/NAME``: a run's generator → a verified, servable model directory."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from train.extras import EXPORT, exit_for_missing_extra

try:
    from contracts.files import unwritable_dir
    from contracts.model_dir import ModelDirError
    from contracts.run_dir import RunDirError
    from evaluation.evaluate import PARTS
    from evaluation.report import format_table
    from export.build import ExportInputError, ExportOptions, export_run, read_metrics
    from export.graph import DEFAULT_OPSET, ExportError, max_opset
    from export.triton import NAME_RULE, TritonOptions, check_model_name, write_triton_repo
    from export.verify import FLOAT_TOLERANCE, IMAGE_TOLERANCE, Tolerance, VerificationError
except ModuleNotFoundError as exc:  # a service-only install: one line naming the extras to install
    exit_for_missing_extra("gan-export", exc, EXPORT)

PROG = "gan-export"
MIN_OPSET = 17  # ConvTranspose/Round/Clip as used here; older opsets are not tested
EXIT_FAILED = 1  # the export itself failed (e.g. verification against PyTorch): nothing left behind
EXIT_BAD_INPUT = 2  # a refused input (flag, run directory, file, --out), as argparse's usage errors
# The manifest's version: a segment of /v2/models/NAME/versions/VERSION and a string in Triton's config.pbtxt
# (whose own version directory is always 1), so no separators, quotes or spaces.
SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


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


def parse_name(text: str) -> str:
    """A model name that is safe as a directory (Triton repository) and URL segment."""
    try:
        return check_model_name(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {NAME_RULE}, got {text!r}") from None


def parse_version(text: str) -> str:
    """``1.0.0``, ``2.1.0-rc1``, ``3``: letters, digits, ``.``, ``_``, ``+``, ``-``, starting alphanumeric."""
    if not SAFE_VERSION.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"must be letters, digits, '.', '_', '+' and '-', starting with a letter or digit (e.g. 1.0.0), "
            f"got {text!r}"
        )
    return text


def parse_paths(text: str) -> tuple[Path, ...]:
    """``a.json`` or ``a.json,b.json``."""
    paths = tuple(Path(part) for part in text.split(",") if part)
    if not paths:
        raise argparse.ArgumentTypeError(f"expected one or more comma-separated paths, got {text!r}")
    return paths


@dataclass(frozen=True)
class Argument:
    """One ``gan-export`` argument: its name (a flag, or a positional's name), ``add_argument``'s keyword
    arguments, and whether the command that remakes a model directory repeats it."""

    name: str
    kwargs: dict[str, Any]
    remake: str = "changed"  # "always", "changed" (when not the default) or "never" (checks, permissions)
    exclusive: bool = False  # one of the mutually exclusive metrics sources

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.name.lstrip("-").replace("-", "_")

    @property
    def default(self) -> Any:
        action = self.kwargs.get("action")
        if action in ("store_true", "store_false"):
            return action == "store_false"
        default = self.kwargs.get("default")
        kind = self.kwargs.get("type")
        return kind(default) if isinstance(default, str) and kind else default  # as argparse converts it

    def argv(self, value: Any) -> list[str]:
        if self.remake == "never" or value is None or (self.remake == "changed" and value == self.default):
            return []
        if not self.name.startswith("-"):
            return [str(value)]
        if isinstance(value, bool):  # a switch, written only when it differs from its default
            return [self.name]
        text = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        return [self.name, text]


# build_parser declares these and command_for writes them: a flag has one name in one place.
ARGUMENTS: tuple[Argument, ...] = (
    Argument("run_dir", {"type": Path, "metavar": "RUN_DIR", "help": "a gan-train run directory"}, "always"),
    Argument(
        "--out",
        {"type": Path, "required": True, "help": "model directory to write, e.g. models/mnist-cdcgan"},
        "always",
    ),
    Argument(
        "--name",
        {
            "type": parse_name,
            "help": f"model name in the manifest ({NAME_RULE}; default: the --out directory's name)",
        },
        "always",
    ),
    Argument(
        "--version",
        {
            "type": parse_version,
            "default": "1.0.0",
            "help": "model version in the manifest, e.g. 2.0.0 (default: %(default)s)",
        },
        "always",
    ),
    Argument(
        "--opset",
        {
            "type": int,
            "default": DEFAULT_OPSET,
            "help": f"ONNX opset, at least {MIN_OPSET} and at most what the installed onnx and torch "
            "exporter write (default: %(default)s, the exporter's native opset)",
        },
        "always",
    ),
    Argument("--fp16", {"action": "store_true", "help": "also write model.fp16.onnx (float16 inside)"}),
    Argument(
        "--no-label-morph",
        {
            "dest": "label_morph",
            "action": "store_false",
            "help": "do not write label_morph.onnx for a conditional generator",
        },
    ),
    Argument(
        "--metrics",
        {"type": Path, "help": "metrics.json from gan-eval to embed in the manifest"},
        exclusive=True,
    ),
    Argument(
        "--evaluate",
        {
            "action": "store_true",
            "help": "embed gan-eval metrics of the exported model.onnx (needs models/mnist-classifier)",
        },
        exclusive=True,
    ),
    Argument("--eval-n", {"type": int, "help": "images --evaluate generates (default: gan-eval's)"}),
    Argument(
        "--eval-part",
        {
            "choices": PARTS,
            "default": "held_out",
            "help": "the real images --evaluate measures against: held_out, or test where the data has a "
            "test split (default: %(default)s)",
        },
    ),
    Argument(
        "--compare-with",
        {
            "type": parse_paths,
            "help": "gan-eval metrics.json of earlier versions (comma-separated), measured like this one "
            "(same classifier, part and image count): shown side by side in the model card",
        },
    ),
    Argument(
        "--classifier", {"type": Path, "help": "classifier directory for --evaluate (default: gan-eval's)"}
    ),
    Argument(
        "--sample-seeds",
        {"type": parse_seeds, "default": "0-9", "help": "columns of samples.png (default: %(default)s)"},
    ),
    Argument(
        "--image-tolerance",
        {
            "type": int,
            "default": IMAGE_TOLERANCE,
            "help": "max uint8 difference ONNX Runtime vs PyTorch (default: %(default)s)",
        },
        "never",
    ),
    Argument(
        "--float-tolerance",
        {
            "type": float,
            "default": FLOAT_TOLERANCE,
            "help": "max difference of the float output before quantisation (default: %(default)s)",
        },
        "never",
    ),
    Argument("--overwrite", {"action": "store_true", "help": "replace --out if it exists"}, "never"),
    Argument(
        "--triton-repo",
        {
            "type": Path,
            "help": "also write a Triton model repository entry: DIR/NAME/config.pbtxt and "
            "DIR/NAME/1/model.onnx (other Triton options: python -m export.triton)",
        },
        "never",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a training run's generator to ONNX (uint8 NHWC output, dynamic batch), verify it "
        "against PyTorch with ONNX Runtime, and write a model directory: model.onnx, manifest.json, "
        "samples.png, README.md.",
        epilog="Exit status: 0 when written; 2 when an input is refused before any export work (a bad flag, "
        "run directory, metrics file or --out; --out exists without --overwrite); 1 when the export itself "
        "fails (e.g. verification against PyTorch). Neither leaves anything at --out.",
    )
    metrics = parser.add_mutually_exclusive_group()
    for argument in ARGUMENTS:
        (metrics if argument.exclusive else parser).add_argument(argument.name, **argument.kwargs)
    return parser


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The export the parsed command line asks for (``command`` left empty)."""
    return ExportOptions(
        name=args.name or args.out.resolve().name,
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
        eval_part=args.eval_part,
        classifier_dir=args.classifier,
        compare_with=args.compare_with or (),
    )


def command_for(
    run_dir: str | Path, out: str | Path, options: ExportOptions, metrics_file: str | Path | None = None
) -> str:
    """The ``gan-export`` command line that remakes ``out`` from ``run_dir`` with ``options`` (``--metrics``
    only when the file they were read from is given); tolerances and ``--overwrite`` are left out."""
    values = {
        "run_dir": run_dir,
        "out": out,
        "name": options.name,
        "version": options.version,
        "opset": options.opset,
        "fp16": options.fp16,
        "label_morph": options.label_morph,
        "metrics": metrics_file,
        "evaluate": options.evaluate,
        "eval_n": options.eval_n,
        "eval_part": options.eval_part,
        "compare_with": tuple(options.compare_with) or None,
        "classifier": options.classifier_dir,
        "sample_seeds": tuple(options.sample_seeds),
    }
    return shlex.join([PROG, *(part for a in ARGUMENTS for part in a.argv(values.get(a.dest)))])


def check_out(out: Path) -> None:
    """Refuse an ``--out`` no model directory can be written to, before any export work: its nearest
    existing ancestor must be a directory that takes a (probe) directory."""
    # an existing --out is replaced from a sibling staging directory: its parent is written too
    reason = unwritable_dir(out) or (unwritable_dir(out.parent) if out.exists() else None)
    if reason is not None:
        raise ExportInputError(f"--out {out}: {reason}")


def check_inputs(args: argparse.Namespace, name: str) -> None:
    """The refusals that need no export: output places, and the files the flags name."""
    check_out(args.out)
    if args.compare_with:
        if not (args.metrics or args.evaluate):
            raise ExportInputError("--compare-with needs this model's metrics too (--evaluate or --metrics)")
        for path in args.compare_with:
            read_metrics(path, "--compare-with")
    if args.triton_repo:
        target = args.triton_repo / name
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"--triton-repo: {target} exists; pass --overwrite to replace it")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be at least {MIN_OPSET}, got {args.opset}")
    if args.opset > max_opset():
        parser.error(
            f"--opset must be at most {max_opset()} (the highest the installed onnx and torch exporter "
            f"write), got {args.opset}"
        )
    if args.image_tolerance < 0 or args.float_tolerance < 0:
        parser.error("--image-tolerance and --float-tolerance must be >= 0")
    if args.eval_n is not None and args.eval_n < 1:
        parser.error(f"--eval-n must be at least 1, got {args.eval_n}")
    if args.name is None:
        try:
            check_model_name(args.out.resolve().name)
        except ValueError as exc:
            parser.error(f"--out {args.out}: its directory name is no model name ({exc}); pass --name")
    try:
        options = options_from_args(args)
        check_inputs(args, options.name)
        options = replace(options, command=command_for(args.run_dir, args.out, options, args.metrics))
        manifest = export_run(args.run_dir, args.out, options)
        if args.triton_repo:
            write_triton_repo(args.out, args.triton_repo, TritonOptions(overwrite=args.overwrite))
    except (ExportInputError, RunDirError, FileExistsError) as exc:  # refused: nothing was exported
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ExportError, VerificationError, ModelDirError, ValueError) as exc:  # the export itself failed
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(summary(manifest, args.out))
    if (
        args.evaluate
    ):  # what gan-eval prints: the metrics beside the real floor, then the product bar's verdict
        print()
        print(format_table(manifest["metrics"]))
    return 0


def summary(manifest: dict, out: Path) -> str:
    v = manifest["verification"]
    size = (out / manifest["file"]).stat().st_size
    lines = [
        f"wrote {out}/ ({manifest['name']} {manifest['version']}, {manifest['file']} {size / 1e6:.2f} MB, "
        f"opset {manifest['opset']})",
        f"  verified vs PyTorch at batch sizes {v['batch_sizes']}: "
        f"uint8 max abs diff {v['image_max_abs_diff']}"
        + (
            f", float max abs diff {v['float_max_abs_diff']:.2e}"
            if v.get("float_max_abs_diff") is not None
            else ""
        ),
    ]
    likelihood = (manifest.get("autoregressive") or {}).get("likelihood") or {}
    if likelihood:  # an autoregressive model: sampled pixel by pixel, with an explicit likelihood
        lines.append(f"  autoregressive: held-out {likelihood['held_out_bits_per_dim']:.4f} bits/dim")
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

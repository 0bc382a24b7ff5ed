"""``gan-eval``: measure a generator against held-out real images, or (re)train the domain classifier.

    gan-eval runs/default                          # a run directory (PyTorch)
    gan-eval models/mnist-cdcgan --out reports/tmp/cdcgan --seed 0
    gan-eval runs/full --classifier models/mnist-classifier-full --part test  # mnist has a test split
    gan-eval train-classifier --out models/mnist-classifier
    gan-eval compare --epochs 5 --out reports                # every variant, one budget, one table
    gan-eval projection models/mnist-cdcgan --out reports    # the encoder on held-out real digits
    gan-eval choose runs/full --classifier models/mnist-classifier-full  # which kept epoch to ship
    gan-eval truncation models/mnist-cdcgan --levels 1,0.8,0.6   # what the truncation parameter trades

Prints metric | model | real floor, the product bar's verdict, and writes metrics.json, report.md and
samples.png to --out (default PATH/eval). Exit status: 0 done, 1 product bar failed (with --check),
2 bad input.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from train.extras import EVAL, exit_for_missing_extra

try:
    import torch

    from evaluation.choice_record import CHOICE_DIR, CHOICE_FILE, CHOICE_PLOT, CHOICE_REPORT
    from evaluation.choose import (
        CHOICE_PART,
        choose,
        export_hint,
        kept_generators,
        table,
        write_choice,
    )
    from evaluation.classifier import DEFAULT_CLASSIFIER_DIR
    from evaluation.compare import REPORT_NAME, CompareSettings, compare, variant_names
    from evaluation.evaluate import DEFAULT_N, EvalSettings, ProductBar, evaluate_path, load_reference
    from evaluation.report import format_table, write_report
    from evaluation.sources import open_source
    from evaluation.train_classifier import ClassifierTraining, train_classifier
    from evaluation.truncation import (
        DEFAULT_LEVELS,
        SWEEP_FILE,
        SWEEP_PLOT,
        SWEEP_REPORT,
        SWEEP_SAMPLES,
        parse_levels,
        sweep,
        write_sweep,
    )
    from evaluation.truncation import table as truncation_table
    from train.cli import DEFAULT_THREADS  # more threads spin on a busy shared CPU (many times slower)
    from train.loop import resolve_device
except ModuleNotFoundError as exc:  # a service-only install: one line naming the extra to install
    exit_for_missing_extra("gan-eval", exc, EVAL)

EVAL_DIR = "eval"  # inside PATH: where gan-eval and gan-eval truncation write without --out
EXIT_BAR_FAILED = 1
EXIT_BAD_INPUT = 2


def _add_dataclass_flags(
    parser: argparse.ArgumentParser, defaults: object, skip: tuple[str, ...] = ()
) -> None:
    for f in fields(defaults):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        default = getattr(defaults, f.name)
        kind = type(default) if default is not None else int
        shown = f.metadata.get("help", f"({default})")
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default, help=shown)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-eval", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "path", type=Path, help="run directory (config.json + generator.safetensors) or model directory"
    )
    p.add_argument("--out", type=Path, default=None, help="where to write the report (default PATH/eval)")
    p.add_argument(
        "--n",
        type=_positive,
        default=None,
        help=f"images to generate ({DEFAULT_N}, or the training split's size when smaller)",
    )
    p.add_argument(
        "--classifier", type=Path, default=DEFAULT_CLASSIFIER_DIR, help="domain classifier directory"
    )
    p.add_argument("--check", action="store_true", help="exit with status 1 when the product bar fails")
    p.add_argument(
        "--threads", type=_positive, default=DEFAULT_THREADS, help=f"torch CPU threads ({DEFAULT_THREADS})"
    )
    _add_dataclass_flags(p, EvalSettings(), skip=("n",))
    _add_dataclass_flags(p, ProductBar())
    return p


def classifier_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-eval train-classifier",
        description="Train the domain classifier on the training split only.",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_CLASSIFIER_DIR, help=f"({DEFAULT_CLASSIFIER_DIR})")
    p.add_argument(
        "--threads", type=_positive, default=DEFAULT_THREADS, help=f"torch CPU threads ({DEFAULT_THREADS})"
    )
    _add_dataclass_flags(p, ClassifierTraining())
    return p


def _pick(cls: type, args: argparse.Namespace, **extra: object) -> object:
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.name not in extra}, **extra)


def run_evaluate(argv: list[str]) -> int:
    args = evaluate_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = _pick(EvalSettings, args, n=args.n)
    bar = _pick(ProductBar, args)
    evaluation = evaluate_path(args.path, settings, bar, args.classifier)  # type: ignore[arg-type]
    out = write_report(evaluation, args.out or args.path / EVAL_DIR, shlex.join(["gan-eval", *argv]))
    print(format_table(evaluation.result))
    print(f"wrote {out}/metrics.json, report.md, samples.png")
    return EXIT_BAR_FAILED if args.check and not evaluation.result["product_bar"]["passed"] else 0


def run_train_classifier(argv: list[str]) -> int:
    args = classifier_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    train_classifier(_pick(ClassifierTraining, args), args.out)  # type: ignore[arg-type]
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def compare_parser() -> argparse.ArgumentParser:
    d = CompareSettings()
    p = argparse.ArgumentParser(
        prog="gan-eval compare",
        description="Train every variant with one budget and seed, evaluate each, write one table.",
    )
    p.add_argument("--epochs", type=_positive, default=d.epochs, help=f"budget per variant ({d.epochs})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"training seed of every variant ({d.seed})")
    p.add_argument("--models", type=_names, default=d.models, help=f"comma-separated ({','.join(d.models)})")
    p.add_argument("--losses", type=_names, default=d.losses, help=f"comma-separated ({','.join(d.losses)})")
    p.add_argument(
        "--runs-dir", type=Path, default=d.runs_dir, help=f"run directories, resumed ({d.runs_dir})"
    )
    p.add_argument("--out", type=Path, default=d.out, help=f"report directory ({d.out})")
    p.add_argument(
        "--n",
        type=_positive,
        default=None,
        help=f"images per evaluation ({DEFAULT_N}, or the training split's size when smaller)",
    )
    p.add_argument(
        "--classifier", type=Path, default=DEFAULT_CLASSIFIER_DIR, help="domain classifier directory"
    )
    p.add_argument(
        "--threads", type=_positive, default=DEFAULT_THREADS, help=f"torch CPU threads ({DEFAULT_THREADS})"
    )
    p.add_argument("--device", default=d.device, help=f"training device: auto, cpu, cuda[:N] ({d.device})")
    p.add_argument("--width", type=_positive, default=None, help="every variant's width (gan-train's)")
    p.add_argument(
        "--batch-size", type=_positive, default=None, help="every variant's batch size (gan-train's)"
    )
    return p


def run_compare(argv: list[str]) -> int:
    args = compare_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = CompareSettings(
        args.epochs,
        args.seed,
        args.models,
        args.losses,
        args.runs_dir,
        args.out,
        args.device,
        width=args.width,
        batch_size=args.batch_size,
    )
    list(variant_names(settings.models, settings.losses))  # refuse unknown names before any slow work
    resolve_device(settings.device)
    reference = load_reference(args.classifier)
    compare(settings, reference, EvalSettings(n=args.n), command=shlex.join(["gan-eval", "compare", *argv]))
    print(f"wrote {args.out / REPORT_NAME}")
    return 0


def _add_series_flags(p: argparse.ArgumentParser, n_help: str, progress_help: str) -> None:
    """The flags of a command that evaluates a series (kept generators, truncation levels) at one n."""
    p.add_argument("--n", type=_positive, default=None, help=n_help)
    p.add_argument(
        "--classifier", type=Path, default=DEFAULT_CLASSIFIER_DIR, help="domain classifier directory"
    )
    p.add_argument(
        "--threads", type=_positive, default=DEFAULT_THREADS, help=f"torch CPU threads ({DEFAULT_THREADS})"
    )
    p.add_argument("--no-progress", action="store_true", help=progress_help)


def choose_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-eval choose",
        description="Measure every generator a run kept (gan-train --keep-every) on the held-out split,\n"
        "never the test split, and choose one: the lowest FID among those meeting --min-label-accuracy.",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("run", type=Path, help="run directory trained with --keep-every")
    p.add_argument("--out", type=Path, default=None, help="where to write choice.md/.json/.png (RUN/choice)")
    _add_series_flags(
        p,
        f"images per generator ({DEFAULT_N}, or the training split's size when smaller; FID depends on\n"
        "n, so every one is measured at the same n)",
        "no bar and no line per generator",
    )
    _add_dataclass_flags(p, EvalSettings(), skip=("n", "part", "truncation"))
    _add_dataclass_flags(p, ProductBar(), skip=("max_fid_ratio", "min_diversity_ratio", "min_recall_ratio"))
    return p


def run_choose(argv: list[str]) -> int:
    args = choose_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    kept_generators(args.run)  # refuse a run without kept generators before loading anything
    settings = _pick(EvalSettings, args, n=args.n, part=CHOICE_PART, truncation=1.0)
    bar = ProductBar(min_label_accuracy=args.min_label_accuracy)
    choice = choose(args.run, load_reference(args.classifier), settings, bar, progress=not args.no_progress)
    out = write_choice(choice, args.out or args.run / CHOICE_DIR, shlex.join(["gan-eval", "choose", *argv]))
    print(table(choice))
    print(f"chosen: {choice['chosen']} ({choice['reason']})")
    print(f"wrote {out}/{CHOICE_REPORT}, {CHOICE_FILE}, {CHOICE_PLOT}")
    print(export_hint(choice))
    return 0


def truncation_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-eval truncation",
        description="Measure one generator at several truncation levels (the service's truncation\n"
        "parameter): label accuracy, FID, precision/recall, density/coverage and CAS beside the real floor.",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("path", type=Path, help="run directory or model directory")
    p.add_argument(
        "--out", type=Path, default=None, help="where to write truncation.md/.json/.png (PATH/eval)"
    )
    p.add_argument(
        "--levels",
        type=str,
        default=",".join(f"{level:g}" for level in DEFAULT_LEVELS),
        help="comma-separated truncation levels in (0, 1] (%(default)s)",
    )
    _add_series_flags(
        p,
        f"images per level ({DEFAULT_N}, or the training split's size when smaller)",
        "no bar and no line per level",
    )
    _add_dataclass_flags(p, EvalSettings(), skip=("n", "truncation"))
    return p


def run_truncation(argv: list[str]) -> int:
    args = truncation_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    levels = parse_levels(args.levels)
    settings = _pick(EvalSettings, args, n=args.n, truncation=1.0)
    source = open_source(args.path)
    reference = load_reference(args.classifier)
    reference.against(settings.part)  # refuses a part the data lacks before any slow work
    result = sweep(source, reference, settings, levels, progress=not args.no_progress)
    out = args.out or args.path / EVAL_DIR
    write_sweep(result, source, levels, out, shlex.join(["gan-eval", "truncation", *argv]))
    print(truncation_table(result))
    print(f"wrote {out}/{SWEEP_REPORT}, {SWEEP_FILE}, {SWEEP_PLOT}, {SWEEP_SAMPLES}")
    return 0


def run_projection(argv: list[str]) -> int:
    from evaluation.projection import main as projection  # needs ONNX Runtime: imported when asked for

    torch.set_num_threads(DEFAULT_THREADS)
    return projection(argv)


COMMANDS = {
    "train-classifier": run_train_classifier,
    "compare": run_compare,
    "projection": run_projection,
    "choose": run_choose,
    "truncation": run_truncation,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        return command(argv[1:]) if command else run_evaluate(argv)
    except ModuleNotFoundError as exc:  # imported when needed: ONNX Runtime for a model directory
        exit_for_missing_extra("gan-eval", exc, EVAL)
    except (
        ValueError,
        OSError,
    ) as exc:  # every input error of this package is a ValueError with a clear message
        print(f"gan-eval: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

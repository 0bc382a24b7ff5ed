"""Run directory → model directory: export, verify, render samples, write the manifest and model card.

Everything is written into a temporary sibling directory that is renamed into place only once every check has
passed, so a failed export never leaves a half-written model directory behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from contracts.files import sha256_file
from contracts.model_dir import (
    AUTOREGRESSIVE_SAMPLING,
    FP16_FILE,
    LABEL_INPUT,
    LABEL_MORPH_FILE,
    LABEL_WEIGHTS_INPUT,
    LATENT_INPUT,
    LATENT_SAMPLING,
    MODEL_FILE,
    OUTPUT_SPEC,
    SAMPLES_FILE,
    write_manifest,
)
from contracts.run_dir import STATE_META_FILE
from evaluation.choice_record import choice_of
from export import card, pixelcnn
from export.graph import (
    DEFAULT_OPSET,
    EXPORT_INPUTS,
    MORPH_INPUTS,
    ExportError,
    ImageGenerator,
    LabelMorphGenerator,
    example_inputs,
    example_morph_inputs,
    export_onnx,
    graph_opset,
    strip_debug_output,
    supports_label_morph,
)
from export.graph_check import verify_model_dir
from export.samples import DEFAULT_SAMPLE_SEEDS, sample_grid, save_grid
from export.verify import (
    FP16_FLOAT_TOLERANCE,
    FP16_IMAGE_TOLERANCE,
    GPU_PROVIDER,
    PROVIDER,
    Tolerance,
    check_parity,
    check_same_images,
    gpu_available,
    label_inputs,
    session,
    weight_inputs,
)
from train.checkpoint import load_generator
from train.models import get_variant

NORMALISATION = {
    "text": (
        "The generator ends in tanh (values in [-1, 1]); the graph itself maps that to pixels, so the "
        "output is uint8 NHWC ready to encode: 4x fewer bytes than float32 between runtime and service, and "
        "no post-processing in the service. Same mapping as train.data.to_uint8."
    ),
    "formula": "image = transpose(uint8(clip(round_half_to_even((x + 1) * 127.5), 0, 255)), NCHW -> NHWC)",
    "in_graph": True,
}


class ExportInputError(ExportError):
    """The export's inputs (a flag, a file it names, the output place) are refused: nothing was exported.
    ``gan-export`` exits 2 for these, as for a usage error, and 1 for a failure of the export itself."""


@dataclass(frozen=True)
class ExportOptions:
    name: str
    version: str = "1.0.0"
    opset: int = DEFAULT_OPSET
    fp16: bool = False
    label_morph: bool = True  # when the generator is conditional and supports it
    metrics: dict | None = None
    sample_seeds: tuple[int, ...] = DEFAULT_SAMPLE_SEEDS
    tolerance: Tolerance = field(default_factory=Tolerance)
    overwrite: bool = False
    evaluate: bool = False  # run evaluation on the exported graph and embed the result as metrics
    eval_n: int | None = None  # images to generate for evaluation; None: the evaluation's default
    eval_part: str = "held_out"  # the real images the evaluation measures against (evaluation.PARTS)
    compare_with: tuple[Path, ...] = ()  # metrics.json of earlier versions, for the card's side-by-side
    classifier_dir: Path | None = None  # None: the evaluation's default (models/mnist-classifier)
    command: str = ""  # the command line that remakes this directory, for the model card ("": from options)
    serving_max_batch: int = 16  # autoregressive models: the manifest's hint of the most images per call


def export_run(run_dir: str | Path, out_dir: str | Path, options: ExportOptions) -> dict:
    """Export ``run_dir``'s generator to ``out_dir``; returns the manifest. Raises ``ExportError``,
    ``VerificationError``, ``RunDirError``, ``FileExistsError``, ``ExportInputError`` with a message naming
    what failed."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and not options.overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
    generator, config = load_generator(run_dir)
    staging = _make_staging(out_dir)
    try:
        manifest = _build(generator, config, staging, options, run_dir)
        write_manifest(staging, manifest)
        if options.evaluate:  # reads the staged manifest.json + model.onnx, as gan-eval MODEL_DIR would
            manifest["metrics"] = _evaluate(staging, out_dir, options)
            write_manifest(staging, manifest)
        if options.compare_with:
            manifest["compared_with"] = compared_with(manifest.get("metrics"), options.compare_with)
            write_manifest(staging, manifest)
        command = options.command or _remake_command(run_dir, out_dir, options)
        progress = _read_progress(run_dir)
        (staging / card.CARD_FILE).write_text(card.render(manifest, run_dir, progress, command))
        verify_model_dir(staging)  # the directory as the service will see it
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _make_staging(out_dir: Path) -> Path:
    """The empty sibling directory the export is written into, or ``ExportInputError`` naming ``--out``."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    except OSError as exc:
        raise ExportInputError(
            f"--out {out_dir}: cannot write a model directory there ({exc.strerror or exc})"
        ) from exc


def _remake_command(run_dir: Path, out_dir: Path, options: ExportOptions) -> str:
    """The model card's command when the caller gave none: from ``gan-export``'s own argument table."""
    from export.cli import command_for  # export.cli imports this module

    return command_for(run_dir, out_dir, options)


def _build(generator: nn.Module, config: dict, staging: Path, options: ExportOptions, run_dir: Path) -> dict:
    """Write and verify the graphs and the sample grid; returns the manifest (not yet written)."""
    latent_dim, num_classes = int(config["latent_dim"]), int(config["num_classes"])
    conditional = bool(config.get("conditional", get_variant(config["model"]).conditional))

    autoregressive = get_variant(config["model"]).autoregressive
    if autoregressive:
        shipped, verification = _export_autoregressive(generator, staging, latent_dim, num_classes, options)
    else:
        shipped, verification = _export_generator(generator, staging, latent_dim, num_classes, options)

    manifest: dict = {
        "name": options.name,
        "version": options.version,
        "file": MODEL_FILE,
        "sha256": sha256_file(staging / MODEL_FILE),
        "num_classes": num_classes,
        "labels": [str(label) for label in config.get("label_names", range(num_classes))],
        "latent_dim": latent_dim,
        "image_shape": [int(d) for d in config["image_shape"]],
        "inputs": {"latent": LATENT_INPUT, "label": LABEL_INPUT},
        "output": dict(OUTPUT_SPEC),
        "normalisation": NORMALISATION,
        # what the written graph imports, read back: never merely the opset asked for
        "opset": graph_opset(onnx.load(str(staging / MODEL_FILE), load_external_data=False)),
        "conditional": conditional,
        "sampling": AUTOREGRESSIVE_SAMPLING if autoregressive else LATENT_SAMPLING,
        "training": config,
        "data_split": config.get("split"),
        "verification": verification,
        "metrics": options.metrics,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "samples": {
            "file": SAMPLES_FILE,
            "rows": "labels" if conditional else "seed offset: row r adds r * len(columns_seeds)",
            "columns_seeds": list(options.sample_seeds),
        },
    }

    if (chosen := choice_of(run_dir)) is not None:
        manifest["chosen"] = chosen  # a kept generator its run's gan-eval choose chose on the held-out split
    if autoregressive:
        manifest.update(pixelcnn.autoregressive_fields(generator, run_dir, options.serving_max_batch))
    if options.fp16:
        manifest["variants"] = {"fp16": _export_fp16(generator, staging, latent_dim, num_classes, options)}
    if options.label_morph and conditional and supports_label_morph(generator):
        manifest["extra_graphs"] = {
            "label_morph": _export_label_morph(generator, staging, shipped, latent_dim, num_classes, options)
        }

    grid = sample_grid(shipped, latent_dim, num_classes, options.sample_seeds, conditional)
    save_grid(grid, staging / SAMPLES_FILE)
    return manifest


def _export_generator(
    generator: nn.Module, staging: Path, latent_dim: int, num_classes: int, options: ExportOptions
) -> tuple[ort.InferenceSession, dict]:
    """``model.onnx`` of a latent generator, verified against PyTorch: its session and verification."""
    reference = ImageGenerator(generator, debug=True)
    model = _export_verified(
        reference,
        reference,
        example_inputs(latent_dim, num_classes),
        EXPORT_INPUTS,
        label_inputs(latent_dim, num_classes),
        options.opset,
        options.tolerance,
        MODEL_FILE,
    )
    onnx.save(model.shipped, staging / MODEL_FILE)
    shipped = session(str(staging / MODEL_FILE))
    verification = {
        "runtime": f"onnxruntime {ort.__version__} {PROVIDER}",
        "reference": f"torch {torch.__version__} (CPU, float32, eval mode)",
        "exporter": "torch.onnx.export(dynamo=True, optimize=True)",
        "inputs": "z = contracts.latents for seeds 0..N-1; label = arange(N) % num_classes",
        "float_checked_on": "the same graph with the generator's float output as a second output, "
        "removed before saving",
        **model.float_report,
        "image_max_abs_diff": check_parity(
            shipped, reference, label_inputs(latent_dim, num_classes), MODEL_FILE, options.tolerance
        )["image_max_abs_diff"],
    }
    return shipped, verification


def _export_autoregressive(
    generator: nn.Module, staging: Path, latent_dim: int, num_classes: int, options: ExportOptions
) -> tuple[ort.InferenceSession, dict]:
    """``model.onnx`` of an autoregressive model: the whole sampling loop in one graph (export.pixelcnn)."""
    if options.fp16:
        raise ExportInputError(
            "--fp16 is not supported for an autoregressive model (its sampling loop is float32)"
        )
    onnx.save(pixelcnn.export_sampler(generator, options.opset), staging / MODEL_FILE)
    shipped = session(str(staging / MODEL_FILE))
    return shipped, pixelcnn.verify_sampler(shipped, generator, latent_dim, num_classes)


@dataclass(frozen=True)
class _Exported:
    shipped: onnx.ModelProto
    float_report: dict


def _export_verified(
    module: nn.Module,
    reference: nn.Module,
    example: tuple,
    input_names: tuple[str, str],
    make_inputs,
    opset: int,
    tolerance: Tolerance,
    what: str,
) -> _Exported:
    """Export with the float debug output, check both outputs against PyTorch, then strip the debug output."""
    debug_model = export_onnx(module, example, input_names, opset)
    report = check_parity(
        session(debug_model), reference, make_inputs, f"{what} (float debug graph)", tolerance
    )
    return _Exported(
        strip_debug_output(debug_model),
        {
            "batch_sizes": report["batch_sizes"],
            "float_max_abs_diff": report["float_max_abs_diff"],
            "float_tolerance": report["float_tolerance"],
            "image_tolerance": report["image_tolerance"],
        },
    )


def _export_fp16(
    generator: nn.Module, staging: Path, latent_dim: int, num_classes: int, options: ExportOptions
) -> dict:
    tolerance = Tolerance(image=FP16_IMAGE_TOLERANCE, float=FP16_FLOAT_TOLERANCE)
    exported = _export_verified(
        ImageGenerator(generator, debug=True, half=True),
        ImageGenerator(generator, debug=True),
        example_inputs(latent_dim, num_classes),
        EXPORT_INPUTS,
        label_inputs(latent_dim, num_classes),
        options.opset,
        tolerance,
        FP16_FILE,
    )
    onnx.save(exported.shipped, staging / FP16_FILE)
    path = str(staging / FP16_FILE)
    reference = ImageGenerator(generator, debug=True)
    inputs = label_inputs(latent_dim, num_classes)
    report = check_parity(session(path), reference, inputs, FP16_FILE, tolerance)
    verification = {
        **exported.float_report,
        "image_max_abs_diff": report["image_max_abs_diff"],
        "runtime": f"onnxruntime {ort.__version__} {PROVIDER}",
        "reference": f"torch {torch.__version__} float32 model (fp16 graph vs full precision)",
    }
    if gpu_available():
        gpu = check_parity(
            session(path, GPU_PROVIDER), reference, inputs, f"{FP16_FILE} on {GPU_PROVIDER}", tolerance
        )
        verification["gpu_image_max_abs_diff"] = gpu["image_max_abs_diff"]
        verification["note"] = f"verified on {PROVIDER} and {GPU_PROVIDER}"
    else:
        verification["note"] = (
            f"verified on {PROVIDER} only: {GPU_PROVIDER} was not available at export time, so GPU execution "
            "of this graph is untested"
        )
    return {
        "file": FP16_FILE,
        "sha256": sha256_file(staging / FP16_FILE),
        "precision": "float16 weights and activations; float32 inputs, uint8 output (model.onnx's interface)",
        "verification": verification,
    }


def _export_label_morph(
    generator: nn.Module,
    staging: Path,
    shipped: ort.InferenceSession,
    latent_dim: int,
    num_classes: int,
    options: ExportOptions,
) -> dict:
    reference = LabelMorphGenerator(generator, debug=True)
    inputs = weight_inputs(latent_dim, num_classes)
    exported = _export_verified(
        reference,
        reference,
        example_morph_inputs(latent_dim, num_classes),
        MORPH_INPUTS,
        inputs,
        options.opset,
        options.tolerance,
        LABEL_MORPH_FILE,
    )
    onnx.save(exported.shipped, staging / LABEL_MORPH_FILE)
    morph = session(str(staging / LABEL_MORPH_FILE))
    report = check_parity(morph, reference, inputs, LABEL_MORPH_FILE, options.tolerance)
    one_hot_diff = check_same_images(
        shipped,
        morph,
        label_inputs(latent_dim, num_classes),
        lambda inputs: (inputs[0], np.eye(num_classes, dtype=np.float32)[inputs[1]]),
        f"{LABEL_MORPH_FILE} with one-hot weights vs {MODEL_FILE}",
        options.tolerance.image,
    )
    return {
        "file": LABEL_MORPH_FILE,
        "sha256": sha256_file(staging / LABEL_MORPH_FILE),
        "inputs": {"latent": LATENT_INPUT, "label_weights": LABEL_WEIGHTS_INPUT},
        "verification": {
            **exported.float_report,
            "image_max_abs_diff": report["image_max_abs_diff"],
            "inputs": "z as for model.onnx; label_weights = Dirichlet(1) mixes, seed 0",
            "one_hot_vs_model_max_abs_diff": one_hot_diff,
        },
    }


def _evaluate(staging: Path, out_dir: Path, options: ExportOptions) -> dict:
    """``gan-eval``'s metrics of the exported graph itself (read through the staged manifest)."""
    from evaluation.evaluate import EvalSettings, metrics_for_manifest  # heavy; only when asked
    from train.cli import DEFAULT_THREADS

    kwargs = {"classifier_dir": options.classifier_dir} if options.classifier_dir else {}
    threads = torch.get_num_threads()
    # on gan-eval's threads: the CAS classifiers' training sums depend on the thread count, so the figures
    # would differ from gan-eval's for the same model (97.7 % against 97.2 % for the real floor)
    torch.set_num_threads(DEFAULT_THREADS)
    try:
        settings = EvalSettings(n=options.eval_n, part=options.eval_part)
        metrics = metrics_for_manifest(staging, settings, **kwargs)
    except ValueError as exc:  # EvaluationError, SourceError, ClassifierError: each names what is wrong
        raise ExportError(f"--evaluate failed: {exc}") from exc
    finally:
        torch.set_num_threads(threads)
    metrics.setdefault("source", {})["path"] = str(out_dir)  # where the evaluated graph now lives
    return metrics


def _read_progress(run_dir: Path) -> dict:
    """``state.json``'s epoch/step, when the run has one (only for the model card)."""
    try:
        state = json.loads((run_dir / STATE_META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {key: state[key] for key in ("epoch", "step") if key in state}


def _replace_dir(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, retired)
        os.replace(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
    out_dir.chmod(0o755)  # mkdtemp creates 0700


def read_metrics(path: str | Path, flag: str = "--metrics") -> dict:
    """A gan-eval ``metrics.json``; errors name ``flag`` (the option that gave ``path``) and the file."""
    path = Path(path)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError (a binary file)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ExportInputError(f"{flag} {path}: not readable JSON ({reason})") from exc
    if not isinstance(metrics, dict):
        raise ExportInputError(f"{flag} {path}: must hold a JSON object, got {type(metrics).__name__}")
    return metrics


# What two gan-eval results must share for their figures to stand side by side, and the value a result
# written before the setting existed had.
COMPARABLE = (
    ("classifier", "dir", None),
    ("evaluated_against", "part", None),
    ("settings", "n", None),
    ("settings", "seed", None),
    ("settings", "cas_runs", 1),
)


def compared_with(metrics: dict | None, paths: tuple[Path, ...]) -> list[dict]:
    """Earlier versions' ``gan-eval`` results, checked to be measured like ``metrics``."""
    if not metrics:
        raise ExportInputError("--compare-with needs this model's metrics too (--evaluate or --metrics)")
    earlier = []
    for path in paths:
        other = read_metrics(path, "--compare-with")
        differ = [
            f"{outer}.{inner} {theirs!r} vs {ours!r}"
            for outer, inner, default in COMPARABLE
            if (theirs := other.get(outer, {}).get(inner, default))
            != (ours := metrics.get(outer, {}).get(inner, default))
        ]
        if differ:
            raise ExportInputError(
                f"--compare-with {path}: not measured like this model ({'; '.join(differ)})"
            )
        earlier.append(other)
    return earlier

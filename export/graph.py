"""Turning a generator into ONNX graphs whose output is ready-to-send pixels.

Post-processing lives inside the graph: the service receives uint8 NHWC images (4x fewer bytes than float32,
and no per-request numpy work), using the same mapping as ``train.data.to_uint8``.
Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), which folds BatchNorm into the
preceding Gemm/ConvTranspose and constant-folds when ``optimize=True``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from typing import Any

import onnx
import torch
from torch import nn

from contracts.model_dir import IMAGE_OUTPUT, LABEL_INPUT, LABEL_WEIGHTS_INPUT, LATENT_INPUT

DEFAULT_OPSET = 18  # the dynamo exporter's own opset: no version conversion step
ONNX_DOMAINS = ("", "ai.onnx")  # the default operator set's domain, as opset_import names it
DEBUG_OUTPUT = "generated"  # the float output kept only while verifying, then stripped
_EXAMPLE_BATCH = 2  # >1 so that tracing does not specialise the batch axis


class ExportError(RuntimeError):
    """The generator could not be turned into a valid ONNX graph."""


def max_opset() -> int:
    """The highest opset this install can write: what both the installed onnx (its version converter) and the
    torch exporter know. Above it, ``torch.onnx.export`` logs tracebacks and silently keeps its own opset."""
    limits = [onnx.defs.onnx_opset_version()]
    try:
        from torch.onnx import _constants  # private; when it moves, onnx's limit alone applies

        limits.append(int(_constants.ONNX_MAX_OPSET))
    except (ImportError, AttributeError, TypeError, ValueError):
        pass
    return min(limits)


def graph_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset a graph actually imports (what to record: never the one asked for)."""
    versions = [entry.version for entry in model.opset_import if entry.domain in ONNX_DOMAINS]
    if not versions:
        raise ExportError("the exported graph imports no default-domain (ai.onnx) opset")
    return int(versions[0])


def to_image(x: torch.Tensor) -> torch.Tensor:
    """float ``[N, C, H, W]`` in [-1, 1] → uint8 ``[N, H, W, C]``: ``clip(rint((x + 1) * 127.5), 0, 255)``."""
    return torch.clamp(torch.round((x + 1.0) * 127.5), 0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)


class ImageGenerator(nn.Module):
    """``(z, label) → uint8 image``; with ``debug`` it also returns the generator's float output.

    ``half`` runs the generator in float16 while keeping float32 inputs, so both variants share one interface.
    """

    def __init__(self, generator: nn.Module, debug: bool = False, half: bool = False):
        super().__init__()
        self.generator = copy.deepcopy(generator).half() if half else generator
        self.debug = debug
        self.half = half

    def forward(
        self, z: torch.Tensor, label: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.generator(z.half() if self.half else z, label).float()
        image = to_image(x)
        return (image, x) if self.debug else image


class LabelMorphGenerator(nn.Module):
    """``(z, label_weights) → uint8 image`` through the generator's ``forward_label_weights``: a convex mix of
    label embeddings (docs/design.md, "Label morphing"). One-hot weights reproduce ``model.onnx``."""

    def __init__(self, generator: nn.Module, debug: bool = False):
        super().__init__()
        if not supports_label_morph(generator):
            raise ExportError(f"{type(generator).__name__} has no forward_label_weights(z, label_weights)")
        self.generator = generator
        self.debug = debug

    def forward(
        self, z: torch.Tensor, label_weights: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = self.generator.forward_label_weights(z, label_weights).float()
        image = to_image(x)
        return (image, x) if self.debug else image


def supports_label_morph(generator: nn.Module) -> bool:
    return callable(getattr(generator, "forward_label_weights", None))


def export_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: tuple[str, ...],
    opset: int,
    output_names: tuple[str, ...] | None = None,
    dynamic_shapes: dict[str, dict[int, Any]] | None = None,
) -> onnx.ModelProto:
    """Export ``module`` (eval mode) with a dynamic batch axis on every input and output (or the axes
    ``dynamic_shapes`` names, keyed by ``forward``'s argument names); the outputs are named ``output_names``,
    by default ``IMAGE_OUTPUT`` (then ``DEBUG_OUTPUT`` for a module's debug float output)."""
    module = module.eval()
    if output_names is None:
        output_names = (IMAGE_OUTPUT, DEBUG_OUTPUT) if getattr(module, "debug", False) else (IMAGE_OUTPUT,)
    batch = torch.export.Dim("N")
    if dynamic_shapes is None:
        dynamic_shapes = {input_names[0]: {0: batch}, input_names[1]: {0: batch}}
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter(
                "ignore"
            )  # the exporter's chatter about axis names and deprecated pytree APIs
            program = torch.onnx.export(
                module,
                example,
                None,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                optimize=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # torch.export / onnxscript raise many types; the message is what matters
        raise ExportError(f"torch.onnx.export failed: {exc}") from exc
    model = program.model_proto
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph fails onnx.checker: {exc}") from exc
    return model


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence a logger below ERROR (the exporter logs a warning per missing torchvision op)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def strip_debug_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """The shipped graph: the same nodes, without the float debug output."""
    stripped = copy.deepcopy(model)
    keep = [o for o in stripped.graph.output if o.name != DEBUG_OUTPUT]
    del stripped.graph.output[:]
    stripped.graph.output.extend(keep)
    onnx.checker.check_model(stripped, full_check=True)
    return stripped


def example_inputs(latent_dim: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.zeros(_EXAMPLE_BATCH, latent_dim)
    return z, torch.arange(_EXAMPLE_BATCH, dtype=torch.int64) % num_classes


def example_morph_inputs(latent_dim: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    z, label = example_inputs(latent_dim, num_classes)
    return z, nn.functional.one_hot(label, num_classes).float()


EXPORT_INPUTS = (LATENT_INPUT, LABEL_INPUT)
MORPH_INPUTS = (LATENT_INPUT, LABEL_WEIGHTS_INPUT)

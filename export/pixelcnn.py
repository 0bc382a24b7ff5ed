"""An autoregressive model (``train.pixelcnn``) as one ONNX graph with the generators' signature:
``(z float32 [N, H * W], label int64 [N]) -> image uint8 [N, H, W, 1]``, the whole sampling loop inside it.

Two networks are exported by torch.onnx and inlined into two nested ONNX ``Loop`` nodes, as
``PixelCNN.forward`` samples: once per row r the row network (the vertical stack) runs on rows 0..r and gives
row r's links to the rows above; once per pixel (r, c) the pixel network (the horizontal stack) runs on row
r alone and gives its logits. Both are exact: the causal masks make them so (13x fewer operations than
running the whole network once per pixel). Pixel i = r * W + c takes the smallest level whose cumulative
softmax probability exceeds ``u = Phi(z[:, i])`` (inverse-CDF sampling), and a one-hot ``Where`` writes the
level's value into the canvas. So a seed fixes every draw.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from contracts.model_dir import IMAGE_OUTPUT, LABEL_INPUT, LATENT_INPUT
from contracts.run_dir import LOG_FILE
from export.graph import ExportError, export_onnx, to_image
from export.verify import PROVIDER, VerificationError, label_inputs
from train.pixelcnn import HELD_OUT_BPD, level_values

ROWS_INPUT = "canvas_rows"  # the row network's image input: rows 0..r of the canvas
LINKS = "links"  # the row network's output and the pixel network's input: row r's links to the rows above
ROW_INPUT = "canvas_row"  # the pixel network's image input: row r of the canvas
PIXEL_LOGITS = "row_logits"  # the pixel network's output: row r's logits [N, levels, W]
_EXAMPLE = (2, 3)  # batch and rows of the export examples: >1 so that neither axis is specialised


class RowNetwork(nn.Module):
    """``(x [N, 1, R, W], label) -> links [N, layers, 2 * width, W]`` of row R - 1: once per row."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.model.row_links(x, label)


class PixelNetwork(nn.Module):
    """``(row [N, 1, 1, W], links, label) -> logits [N, levels, W]``: once per pixel."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, row: torch.Tensor, links: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.model.row_logits(row, links, label)


def _inlinable(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.functions:
        raise ExportError("a pixelcnn step graph has local functions; cannot inline it into a Loop body")
    return model


def export_steps(model: nn.Module, opset: int) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The row network (dynamic batch and rows) and the pixel network (dynamic batch)."""
    batch, rows = _EXAMPLE
    n, r = torch.export.Dim("N"), torch.export.Dim("R", min=1, max=model.height)
    label = torch.arange(batch, dtype=torch.int64)
    row_net = RowNetwork(model)
    x = torch.zeros(batch, 1, rows, model.width)
    dynamic = {"x": {0: n, 2: r}, "label": {0: n}}
    row_model = export_onnx(row_net, (x, label), (ROWS_INPUT, LABEL_INPUT), opset, (LINKS,), dynamic)
    with torch.no_grad():
        links = row_net(x, label)
    names = (ROW_INPUT, LINKS, LABEL_INPUT)
    dynamic = {"row": {0: n}, "links": {0: n}, "label": {0: n}}
    example = (x[:, :, :1], links, label)
    pixel_model = export_onnx(PixelNetwork(model), example, names, opset, (PIXEL_LOGITS,), dynamic)
    return _inlinable(row_model), _inlinable(pixel_model)


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _inlined(
    step: onnx.ModelProto, prefix: str, inputs: dict[str, str]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A step graph's nodes and initializers with every value name prefixed, but its inputs, renamed by
    ``inputs`` (e.g. its label input read from the outer graph's ``label``)."""
    graph = step.graph

    def rename(name: str) -> str:
        return inputs.get(name, name if name == "" else prefix + name)

    nodes = []
    for node in graph.node:
        if any(
            attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute
        ):
            raise ExportError(f"the pixelcnn step graph has a subgraph in {node.op_type}; cannot inline it")
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + node.name
        copy.input[:] = [rename(name) for name in node.input]
        copy.output[:] = [rename(name) for name in node.output]
        nodes.append(copy)
    initializers = []
    for tensor in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = rename(tensor.name)
        initializers.append(copy)
    return nodes, initializers


def _canvas(name: str, height: int, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 1, height, width])


def _scalar(name: str, kind: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, kind, [])


def _loop_body(
    name: str, counter: str, suffix: str, nodes: list[onnx.NodeProto], height: int, width: int
) -> onnx.GraphProto:
    """A ``Loop`` body over ``counter`` that carries the canvas (``canvas{suffix}`` in and
    ``canvas{suffix}_out`` out, which ``nodes`` compute) and keeps its condition."""
    keep = helper.make_node("Identity", [f"cond{suffix}"], [f"cond{suffix}_out"])
    return helper.make_graph(
        [*nodes, keep],
        name,
        [
            _scalar(counter, TensorProto.INT64),
            _scalar(f"cond{suffix}", TensorProto.BOOL),
            _canvas(f"canvas{suffix}", height, width),
        ],
        [_scalar(f"cond{suffix}_out", TensorProto.BOOL), _canvas(f"canvas{suffix}_out", height, width)],
    )


def sampling_graph(
    row_step: onnx.ModelProto, pixel_step: onnx.ModelProto, height: int, width: int, levels: int
) -> onnx.ModelProto:
    """The whole sampler around the two step networks: ``(z, label) -> uint8 image`` (the module's doc)."""
    pixels = height * width
    row_nodes, row_weights = _inlined(row_step, "row/", {ROWS_INPUT: "canvas_rows", LABEL_INPUT: LABEL_INPUT})
    pixel_nodes, pixel_weights = _inlined(
        pixel_step,
        "pixel/",
        {ROW_INPUT: "canvas_row", LINKS: "row/" + LINKS, LABEL_INPUT: LABEL_INPUT},
    )
    values = np.linspace(-1.0, 1.0, levels, dtype=np.float32)  # = train.pixelcnn.level_values
    constants = [
        _const("inv_sqrt2", np.float32(1.0 / math.sqrt(2.0))),
        _const("half", np.float32(0.5)),
        _const("one", np.float32(1.0)),
        _const("scale", np.float32(127.5)),
        _const("zero_f", np.float32(0.0)),
        _const("max_pixel", np.float32(255.0)),
        _const("height_i", np.int64(height)),
        _const("width_i", np.int64(width)),
        _const("keep_going", np.bool_(True)),
        _const("canvas_tail", np.array([1, height, width], dtype=np.int64)),
        _const("one_i", np.int64(1)),
        _const("zero_1d", np.array([0], dtype=np.int64)),
        _const("rows_axis", np.array([2], dtype=np.int64)),
        _const("axis1", np.array([1], dtype=np.int64)),
        _const("top_level", np.float32(levels - 1)),
        _const("level_values", values),
        _const("pixel_index", np.arange(pixels, dtype=np.int64).reshape(1, 1, height, width)),
        _const("per_image", np.array([-1, 1, 1, 1], dtype=np.int64)),
    ]
    outer = [
        # u = Phi(z) = 0.5 * (1 + erf(z / sqrt 2))
        helper.make_node("Mul", [LATENT_INPUT, "inv_sqrt2"], ["z_scaled"]),
        helper.make_node("Erf", ["z_scaled"], ["z_erf"]),
        helper.make_node("Add", ["z_erf", "one"], ["z_erf1"]),
        helper.make_node("Mul", ["z_erf1", "half"], ["u"]),
        helper.make_node("Shape", [LATENT_INPUT], ["z_shape"], end=1),
        helper.make_node("Concat", ["z_shape", "canvas_tail"], ["canvas_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["canvas_shape"],
            ["canvas0"],
            value=numpy_helper.from_array(np.array([-1.0], dtype=np.float32)),
        ),
    ]
    # inner loop, once per pixel of row r: the pixel network on row r, then inverse-CDF sampling
    pixel_body = [
        helper.make_node("Mul", ["r", "width_i"], ["row_start"]),
        helper.make_node("Add", ["row_start", "c"], ["i"]),
        helper.make_node("Add", ["r", "one_i"], ["r_end"]),
        helper.make_node("Unsqueeze", ["r", "zero_1d"], ["r_1d"]),
        helper.make_node("Unsqueeze", ["r_end", "zero_1d"], ["r_end_1d"]),
        helper.make_node("Slice", ["canvas_px", "r_1d", "r_end_1d", "rows_axis"], ["canvas_row"]),
        *pixel_nodes,
        helper.make_node("Gather", ["pixel/" + PIXEL_LOGITS, "c"], ["pixel_logits"], axis=2),  # [N, levels]
        helper.make_node("Softmax", ["pixel_logits"], ["probs"], axis=1),
        helper.make_node("CumSum", ["probs", "one_i"], ["cdf"]),
        helper.make_node("Gather", ["u", "i"], ["u_i"], axis=1),
        helper.make_node("Unsqueeze", ["u_i", "axis1"], ["u_col"]),
        helper.make_node("LessOrEqual", ["cdf", "u_col"], ["below"]),
        helper.make_node("Cast", ["below"], ["below_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["below_f", "axis1"], ["count"], keepdims=0),
        helper.make_node("Min", ["count", "top_level"], ["level_f"]),
        helper.make_node("Cast", ["level_f"], ["level"], to=TensorProto.INT64),
        helper.make_node("Gather", ["level_values", "level"], ["value"], axis=0),
        helper.make_node("Reshape", ["value", "per_image"], ["value_4d"]),
        # the value at pixel i, the canvas elsewhere: exact
        helper.make_node("Equal", ["pixel_index", "i"], ["at_i"]),
        helper.make_node("Where", ["at_i", "value_4d", "canvas_px"], ["canvas_px_out"]),
    ]
    pixel_graph = _loop_body("pixel_step", "c", "_px", pixel_body, height, width)
    # outer loop, once per row r: the row network on rows 0..r, then the pixel loop
    row_body = [
        helper.make_node("Add", ["r", "one_i"], ["rows"]),
        helper.make_node("Unsqueeze", ["rows", "zero_1d"], ["rows_1d"]),
        helper.make_node("Slice", ["canvas_r", "zero_1d", "rows_1d", "rows_axis"], ["canvas_rows"]),
        *row_nodes,
        helper.make_node("Loop", ["width_i", "keep_going", "canvas_r"], ["canvas_r_out"], body=pixel_graph),
    ]
    row_graph = _loop_body("row_step", "r", "_r", row_body, height, width)
    tail = [
        helper.make_node("Loop", ["height_i", "keep_going", "canvas0"], ["canvas"], body=row_graph),
        # the generators' in-graph mapping (export.graph.to_image): clip(round((x + 1) * 127.5)) -> uint8 NHWC
        helper.make_node("Add", ["canvas", "one"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "scale"], ["scaled"]),
        helper.make_node("Round", ["scaled"], ["rounded"]),
        helper.make_node("Clip", ["rounded", "zero_f", "max_pixel"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["pixels_u8"], to=TensorProto.UINT8),
        helper.make_node("Transpose", ["pixels_u8"], [IMAGE_OUTPUT], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        outer + tail,
        "pixelcnn_sampler",
        [
            helper.make_tensor_value_info(LATENT_INPUT, TensorProto.FLOAT, ["N", pixels]),
            helper.make_tensor_value_info(LABEL_INPUT, TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info(IMAGE_OUTPUT, TensorProto.UINT8, ["N", height, width, 1])],
        initializer=constants + row_weights + pixel_weights,
    )
    model = helper.make_model(graph, opset_imports=list(row_step.opset_import), producer_name="gan-export")
    model.ir_version = row_step.ir_version
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the pixelcnn sampling graph fails onnx.checker: {exc}") from exc
    return model


def export_sampler(model: nn.Module, opset: int) -> onnx.ModelProto:
    """``train.pixelcnn.PixelCNN`` (eval mode) → the sampling graph."""
    model = model.eval()
    return sampling_graph(*export_steps(model, opset), model.height, model.width, model.levels)


# Verified at these batch sizes: one image alone and several (batched rows must not interact).
AUTOREGRESSIVE_BATCH_SIZES = (1, 3)


def verify_sampler(
    shipped: ort.InferenceSession, model: nn.Module, latent_dim: int, num_classes: int
) -> dict[str, Any]:
    """The graph's images equal ``PixelCNN.forward``'s (the same inverse-CDF rule, in PyTorch) for the
    service's latents of seeds 0.. at ``AUTOREGRESSIVE_BATCH_SIZES``; raises ``VerificationError`` if not."""
    make = label_inputs(latent_dim, num_classes)
    worst = 0
    threads = torch.get_num_threads()
    for n in AUTOREGRESSIVE_BATCH_SIZES:
        z, label = make(n)
        # one thread: thousands of tiny per-pixel ops gain nothing from more, and a second OpenMP thread
        # spinning on a busy core made this 15x slower on the shared machine (train/cli.py's DEFAULT_THREADS)
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                expected = to_image(model(torch.from_numpy(z), torch.from_numpy(label))).numpy()
        finally:
            torch.set_num_threads(threads)
        image = shipped.run(None, {LATENT_INPUT: z, LABEL_INPUT: label})[0]
        differs = int(np.count_nonzero(image != expected))
        if differs:
            raise VerificationError(
                f"the pixelcnn sampling graph differs from PyTorch's sampler at batch {n} in {differs} "
                "pixels: a level can flip only where u lies within float rounding of a cumulative "
                "probability, so this is a bug in the graph (or an astronomically unlucky seed)"
            )
        worst = max(worst, differs)
    return {
        "batch_sizes": list(AUTOREGRESSIVE_BATCH_SIZES),
        "image_max_abs_diff": worst,
        "image_tolerance": 0,
        "float_max_abs_diff": None,
        "runtime": f"onnxruntime {ort.__version__} {PROVIDER}",
        "reference": f"torch {torch.__version__} PixelCNN.forward (CPU, float32, eval mode): the same "
        "inverse-CDF sampling from the same z",
        "exporter": "torch.onnx.export(dynamo=True, optimize=True) of the row and pixel networks, wrapped in "
        "two nested ONNX Loop nodes (export.pixelcnn)",
        "inputs": "z = contracts.latents for seeds 0..N-1; label = arange(N) % num_classes",
        "tolerance_note": "images must be equal: both sample with the same rule from the same z; a pixel "
        "could differ only where u is within float rounding of a cumulative probability",
    }


def held_out_likelihood(run_dir: Path) -> dict[str, Any]:
    """The run's last held-out NLL (``log.jsonl``'s last epoch record): what the manifest and card report."""
    last: dict[str, Any] = {}
    log_path = Path(run_dir) / LOG_FILE
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "epoch" and HELD_OUT_BPD in record:
                last = record
    if not last:
        raise ExportError(f"{log_path} has no epoch with {HELD_OUT_BPD}: is it a pixelcnn run?")
    return {
        HELD_OUT_BPD: last[HELD_OUT_BPD],
        "train_bits_per_dim": last.get("bits_per_dim"),
        "epoch": last["epoch"],
        "measured_on": "the run's held-out split (never trained on), teacher-forced NLL of the pixels "
        "quantised to the model's levels, in bits per pixel",
    }


def autoregressive_fields(model: nn.Module, run_dir: Path, serving_max_batch: int) -> dict[str, Any]:
    """The manifest fields of an autoregressive model (``contracts.model_dir.Manifest``)."""
    return {
        "autoregressive": {
            "levels": model.levels,
            "level_values": [round(float(v), 6) for v in level_values(model.levels)],
            "noise": "the latent input is the sampling noise: z[:, i] ~ N(0, 1) is pixel i's draw (raster "
            "order); u = Phi(z) and pixel i takes the smallest level whose cumulative probability exceeds u",
            "likelihood": held_out_likelihood(run_dir),
            "serving": {"max_batch": serving_max_batch},
        },
    }

"""The Open Inference Protocol (KServe v2 REST, as Triton speaks it) beside the service's own API: the
generator's raw tensors through the same batcher, so any v2 client (``tritonclient.http``, KServe's,
perf tooling) can call this service like a Triton server.

- ``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET /v2/health/ready``: as ``/healthz`` and
  ``/readyz`` (live until warm-up fails; ready once warmed up, not while draining).
- ``GET /v2/models/{name}[/versions/{version}]`` (model metadata) and ``.../ready``.
- ``POST /v2/models/{name}[/versions/{version}]/infer``: inputs ``z`` FP32 [N, latent_dim] and ``label``
  INT64 [N] (or [N, 1], as a Triton model repository of the same graph takes it: ``export.triton``; names
  from the manifest) → output ``image`` UINT8 [N, H, W, C]. Tensor data as JSON (flat or
  nested row-major) or by the binary tensor data extension (``Inference-Header-Content-Length``,
  ``binary_data_size`` on inputs, ``binary_data`` on outputs, ``binary_data_output`` on the request).

Errors are the protocol's shape, ``{"error": "..."}``, with status 400 for a bad request (an unknown model or
version too, as the spec's "typically 400" and Triton do); queue full, unavailable and deadline keep the
service's 429 / 503 / 504. The routes stay out of the OpenAPI document: they follow an external spec
(https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/), and the document describes
the service's own API.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.batcher import NeverFits
from service.model_repo import ModelSpec
from service.routes.common import ServiceContext, compute, unless_disconnected
from service.routes.ops import readiness
from service.runtime import GraphKind

HEADER_LENGTH = "Inference-Header-Content-Length"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]
# the protocol's datatype names for the tensors this service takes and gives
DATATYPES = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8"), "UINT8": np.dtype("u1")}


class ProtocolError(Exception):
    """A request the protocol calls bad: answered ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_health_router(ctx: ServiceContext) -> APIRouter:
    """Server metadata and health, included like the service's own operations routes (``public_ops``)."""
    router = APIRouter(include_in_schema=False)
    server = {"name": "gan-service", "version": ctx.spec.manifest.version, "extensions": EXTENSIONS}

    @router.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse(server)

    @router.get("/v2/health/live")
    async def live() -> Response:
        batcher = ctx.lifecycle.batcher
        return Response(status_code=503 if batcher is not None and batcher.failed else 200)

    @router.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if readiness(ctx)[0] else 503)

    return router


def build_router(ctx: ServiceContext) -> APIRouter:
    """Model metadata, model readiness and inference (behind the API key, as the image routes are)."""
    spec, settings = ctx.spec, ctx.settings
    manifest = spec.manifest
    name, version = manifest.name, manifest.version
    latent, label, output = spec.main.latent_input, spec.main.condition_input, spec.main.output
    height, width, channels = spec.image_shape
    inputs = {latent: ("FP32", [-1, spec.latent_dim]), label: ("INT64", [-1])}
    outputs = {output: ("UINT8", [-1, height, width, channels])}
    also = {label: [-1, 1]}  # Triton batches a [N] input as [N, 1]: one client request fits both servers
    metadata = {
        "name": name,
        "versions": [version],
        "platform": PLATFORM,
        "inputs": [{"name": n, "datatype": d, "shape": s} for n, (d, s) in inputs.items()],
        "outputs": [{"name": n, "datatype": d, "shape": s} for n, (d, s) in outputs.items()],
    }
    router = APIRouter(include_in_schema=False)

    def check_model(model: str, model_version: str | None) -> None:
        if model != name:
            raise ProtocolError(f"unknown model {model!r}: this server serves {name!r}")
        if model_version is not None and model_version != version:
            raise ProtocolError(
                f"unknown version {model_version!r} of model {name!r}: this server serves version {version!r}"
            )

    async def model_metadata(model: str, model_version: str | None = None) -> JSONResponse:
        try:
            check_model(model, model_version)
        except ProtocolError as exc:
            return _error(str(exc), exc.status)
        return JSONResponse(metadata)

    async def model_ready(model: str, model_version: str | None = None) -> Response:
        try:
            check_model(model, model_version)
        except ProtocolError as exc:
            return _error(str(exc), exc.status)
        return Response(status_code=200 if readiness(ctx)[0] else 503)

    async def infer(request: Request, model: str, model_version: str | None = None) -> Response:
        try:
            check_model(model, model_version)
            body = await request.body()
            header, tensors = _read_request(body, request.headers.get(HEADER_LENGTH), inputs, also)
            z, labels = tensors[latent], tensors[label].reshape(-1)
            n = len(z)
            if len(labels) != n:
                raise ProtocolError(
                    f"input {label!r} has shape [{len(labels)}] but input {latent!r} has {n} rows: "
                    f"give one label per latent row"
                )
            if n == 0:
                raise ProtocolError(f"input {latent!r} has no rows: give at least one")
            if not np.isfinite(z).all():
                raise ProtocolError(f"input {latent!r} holds NaN or infinite values")
            if spec.conditional:
                bad = (labels < 0) | (labels >= spec.num_classes)
                if bad.any():
                    raise ProtocolError(
                        f"input {label!r} holds {int(labels[bad][0])}: labels must be in "
                        f"[0, {spec.num_classes - 1}]"
                    )
            else:  # an unconditional graph ignores its label input: it is fed zeros, as everywhere else
                labels = np.zeros(n, dtype=np.int64)
            wanted = _requested_outputs(header, outputs)
        except ProtocolError as exc:
            return _error(str(exc), exc.status)
        try:
            work = ctx.batcher.generate(GraphKind.MAIN, z, labels)
            images = await unless_disconnected(request, work, settings.disconnect_check_ms / 1000)
        except NeverFits as exc:
            return _error(
                f"input {latent!r} has {exc.images} rows, more than the server's queue holds "
                f"({exc.queue_images}, GAN_MAX_QUEUE_IMAGES): send fewer rows per request"
            )
        # JSON data of many images is long to write: off the event loop, as the image routes encode
        answer = {"model_name": name, "model_version": version}
        if "id" in header:
            answer["id"] = header["id"]
        results = {output: images}
        return await compute(len(images), settings.inline_max_images, _response, answer, results, wanted)

    paths = ("/v2/models/{model}", "/v2/models/{model}/versions/{model_version}")  # also infer_paths below
    for path in paths:
        router.add_api_route(path, model_metadata, methods=["GET"])
        router.add_api_route(path + "/ready", model_ready, methods=["GET"])
        router.add_api_route(path + "/infer", infer, methods=["POST"])
    return router


def _read_request(
    body: bytes,
    header_length: str | None,
    inputs: dict[str, tuple[str, list[int]]],
    also: dict[str, list[int]],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The request's JSON header and its input tensors, checked against ``inputs`` (name → datatype, shape
    with -1 for the batch axis; ``also``: another shape an input may have)."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= length <= len(body):
            raise ProtocolError(
                f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes: the JSON header must lie "
                "inside it"
            )
        text, binary = body[:length], memoryview(body)[length:]
    else:
        text, binary = body, memoryview(b"")
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the inference request header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("the inference request must be a JSON object")
    given = header.get("inputs")
    if not isinstance(given, list) or not all(isinstance(item, dict) for item in given):
        raise ProtocolError("the inference request needs 'inputs', a list of tensor objects")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for item in given:
        tensor_name = item.get("name")
        if tensor_name not in inputs:
            raise ProtocolError(f"unknown input {tensor_name!r}: the model takes {', '.join(inputs)}")
        if tensor_name in tensors:
            raise ProtocolError(f"input {tensor_name!r} is given twice")
        datatype, shape = inputs[tensor_name]
        if item.get("datatype") != datatype:
            raise ProtocolError(
                f"input {tensor_name!r} has datatype {item.get('datatype')!r}, expected {datatype!r}"
            )
        got = item.get("shape")
        shapes = [shape, *([also[tensor_name]] if tensor_name in also else [])]
        if not isinstance(got, list) or not any(_fits(got, allowed) for allowed in shapes):
            expected = " or ".join(_show(allowed) for allowed in shapes)
            raise ProtocolError(f"input {tensor_name!r} has shape {got!r}, expected {expected}")
        dtype = DATATYPES[datatype]
        count = int(np.prod(got))
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError(f"input {tensor_name!r}: 'parameters' must be a JSON object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise ProtocolError(f"input {tensor_name!r} has both 'data' and binary_data_size")
            if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
                raise ProtocolError(
                    f"input {tensor_name!r}: binary_data_size is {size!r}, but shape {got} of {datatype} "
                    f"takes {count * dtype.itemsize} bytes"
                )
            if offset + size > len(binary):
                raise ProtocolError(
                    f"input {tensor_name!r}: the body holds {len(binary) - offset} bytes of binary data for "
                    f"it, binary_data_size says {size}"
                )
            array = np.frombuffer(binary[offset : offset + size], dtype=dtype).astype(dtype.newbyteorder("="))
            offset += size
        else:
            array = _json_data(tensor_name, item.get("data"), datatype, count)
        tensors[tensor_name] = array.reshape(got)
    if offset != len(binary):
        raise ProtocolError(
            f"the body holds {len(binary) - offset} bytes of binary data that no input's binary_data_size "
            "accounts for"
        )
    missing = [n for n in inputs if n not in tensors]
    if missing:
        raise ProtocolError(f"missing input(s) {', '.join(map(repr, missing))}: the model takes all of them")
    return header, tensors


def _json_data(tensor_name: str, data: Any, datatype: str, count: int) -> np.ndarray:
    """JSON tensor data (flat or nested, row-major) as a flat array of ``datatype``'s dtype."""
    if data is None:
        raise ProtocolError(f"input {tensor_name!r} has no 'data' (and no binary_data_size parameter)")
    try:
        array = np.asarray(data)
    except ValueError:
        raise ProtocolError(f"input {tensor_name!r}: 'data' is not a regular (non-ragged) array") from None
    kinds = "iu" if datatype == "INT64" else "iuf"
    if array.size and array.dtype.kind not in kinds:
        what = "integers" if datatype == "INT64" else "numbers"
        raise ProtocolError(f"input {tensor_name!r}: 'data' must hold {what} for {datatype}")
    if array.size != count:
        raise ProtocolError(
            f"input {tensor_name!r}: 'data' holds {array.size} values, its shape takes {count}"
        )
    dtype = DATATYPES[datatype].newbyteorder("=")
    too_big = array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max
    if datatype == "INT64" and too_big:
        raise ProtocolError(f"input {tensor_name!r}: a value does not fit INT64")
    return array.reshape(-1).astype(dtype)


def _requested_outputs(header: dict[str, Any], outputs: dict[str, tuple[str, list[int]]]) -> dict[str, bool]:
    """Output name → binary or not, for each output the request asks for (all when it names none)."""
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("the request's 'parameters' must be a JSON object")
    default = parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise ProtocolError("parameter 'binary_data_output' must be true or false")
    requested = header.get("outputs")
    if requested is None:
        return dict.fromkeys(outputs, default)
    if not isinstance(requested, list) or not all(isinstance(item, dict) for item in requested):
        raise ProtocolError("'outputs' must be a list of objects naming the outputs to return")
    wanted: dict[str, bool] = {}
    for item in requested:
        output_name = item.get("name")
        if output_name not in outputs:
            raise ProtocolError(f"unknown output {output_name!r}: the model gives {', '.join(outputs)}")
        options = item.get("parameters") or {}
        if not isinstance(options, dict):
            raise ProtocolError(f"output {output_name!r}: 'parameters' must be a JSON object")
        if "classification" in options:
            raise ProtocolError(f"output {output_name!r}: the classification extension is not supported")
        binary = options.get("binary_data", default)
        if not isinstance(binary, bool):
            raise ProtocolError(f"output {output_name!r}: parameter 'binary_data' must be true or false")
        wanted[output_name] = binary
    return wanted


def _response(answer: dict[str, Any], results: dict[str, np.ndarray], wanted: dict[str, bool]) -> Response:
    """The inference response (``answer``: model name, version, request id): JSON, or the JSON header then
    the binary outputs' bytes in output order."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output_name, binary in wanted.items():
        array = results[output_name]
        datatype = next(k for k, v in DATATYPES.items() if v == array.dtype)
        entry: dict[str, Any] = {"name": output_name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            data = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    payload = {**answer, "outputs": described}
    text = json.dumps(payload, separators=(",", ":")).encode()
    if not chunks:
        return Response(text, media_type="application/json")
    return Response(
        b"".join([text, *chunks]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(text))},
    )


def _fits(got: list[Any], shape: list[int]) -> bool:
    """``got`` (a request's shape) is a shape of natural numbers matching ``shape`` (-1: any size)."""
    return (
        len(got) == len(shape)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in got)
        and all(want in (-1, d) for d, want in zip(got, shape, strict=True))
    )


def _show(shape: list[int]) -> str:
    return "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


def infer_paths(spec: ModelSpec) -> frozenset[str]:
    """The served model's infer paths, which add to the queue like the image routes (``QueueDoor``)."""
    name, version = spec.manifest.name, spec.manifest.version
    return frozenset({f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{version}/infer"})

"""The runtime as an Open Inference Protocol (KServe v2 REST) client: with ``GAN_INFERENCE_URL`` the batcher's
batches run on Triton, KServe or another gan-serve instead of a local ONNX Runtime session. Everything before
and after the graph (seeds → latents, batching, PNG, bulk) stays in this process, which then needs only the
model directory's manifest.json.

- Start: the backend's model metadata (``GET /v2/models/{name}``) must match the manifest (input and output
  names, datatypes, shapes); a gan-serve backend also shows its ``/v1/models`` card, whose labels and sha256
  must match too. Otherwise ``StartupError``: gan-serve refuses to start in one line. The backend gets
  ``GAN_INFERENCE_START_TIMEOUT_S`` to answer and be ready (it may start after this process).
- Calls: the binary tensor data extension (raw little-endian bytes after a JSON header), ``label`` sent as
  [N, 1] (which Triton's repository from ``export.triton`` and gan-serve both take), over one pooled
  keep-alive connection (the batcher runs one batch at a time).
- Failure: a backend that cannot be reached, answers 5xx/429 or takes longer than ``GAN_INFERENCE_TIMEOUT_S``
  fails the batch with ``BackendUnavailable`` (503 + Retry-After). Any but a 429 also marks the runtime
  unavailable (readiness false) until a probe of the model's readiness, every ``GAN_INFERENCE_PROBE_S``,
  answers 200 again; meanwhile batches fail at once instead of waiting on a dead backend.
- Label morphing is not offered remotely: the protocol's model is the main graph only (Triton's repository
  holds no label_morph model), so ``/v1/interpolate/labels`` answers 501 (``graphs`` is the main one only).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from service.batcher import Unavailable
from service.config import Settings
from service.model_repo import ModelSpec
from service.runtime import GraphKind, StartupError

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
GAN_SERVICE = "gan-service"  # the server name gan-serve's GET /v2 reports (service.routes.inference_protocol)
DATATYPES = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8"), "UINT8": np.dtype("u1")}
START_POLL_S = 0.5


class BackendUnavailable(Unavailable):
    """The inference backend is down, slow or overloaded: the request gets 503 with ``Retry-After``."""


class RemoteRuntime:
    pads_batches = False  # the backend batches and pads for itself; padding rows would cross the network

    def __init__(self, spec: ModelSpec, settings: Settings, *, probe: bool = True):
        assert settings.inference_url, "RemoteRuntime needs GAN_INFERENCE_URL"
        self.spec = spec
        self.url = settings.inference_url
        self.model = settings.inference_model or spec.manifest.name
        self.providers = [f"remote: {self.url} model {self.model}"]
        self.intra_op_threads: int | None = None
        self.timeout_s = settings.inference_timeout_s
        self._model_path = f"/v2/models/{quote(self.model, safe='')}"
        key = settings.inference_api_key
        self._client = httpx.Client(
            base_url=self.url,
            headers={settings.inference_api_key_header: key.get_secret_value()} if key else None,
            timeout=httpx.Timeout(settings.inference_timeout_s, connect=settings.inference_connect_timeout_s),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )
        self._unavailable: str | None = None
        self._stop = threading.Event()
        self._probe: threading.Thread | None = None
        try:
            self._check_backend(settings.inference_start_timeout_s)
        except BaseException:
            self._client.close()
            raise
        if probe:
            self._probe = threading.Thread(
                target=self._watch, args=(settings.inference_probe_s,), name="gan-backend-probe", daemon=True
            )
            self._probe.start()
        log.info("inference on %s", self.providers[0])

    # --- the InferenceRuntime interface

    @property
    def graphs(self) -> tuple[GraphKind, ...]:
        return (GraphKind.MAIN,)

    @property
    def unavailable(self) -> str | None:
        return self._unavailable

    def run(self, kind: GraphKind, z: np.ndarray, condition: np.ndarray) -> np.ndarray:
        """As ``Runtime.run``, by one infer call to the backend (main graph only)."""
        if kind is not GraphKind.MAIN:
            raise ValueError(f"the remote backend serves the main graph only, not {kind}")
        if (why := self._unavailable) is not None:
            raise BackendUnavailable(why)
        graph, n = self.spec.main, len(z)
        tensors = [
            (graph.latent_input, "FP32", np.ascontiguousarray(z, dtype="<f4")),
            (graph.condition_input, "INT64", np.ascontiguousarray(condition, dtype="<i8").reshape(n, 1)),
        ]
        inputs = [
            {"name": name, "datatype": datatype, "shape": list(array.shape)}
            | {"parameters": {"binary_data_size": array.nbytes}}
            for name, datatype, array in tensors
        ]
        header = {"inputs": inputs, "outputs": [{"name": graph.output, "parameters": {"binary_data": True}}]}
        head = json.dumps(header).encode()
        body = b"".join([head, *(array.tobytes() for _, _, array in tensors)])
        try:
            response = self._client.post(
                self._model_path + "/infer",
                content=body,
                headers={HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"},
            )
        except httpx.TimeoutException:
            raise self._down(f"no answer within {self.timeout_s:g} s (GAN_INFERENCE_TIMEOUT_S)") from None
        except httpx.TransportError as exc:
            raise self._down(f"cannot reach it ({_reason(exc)})") from None
        if response.status_code == 429:  # saturated, not down: this request only
            raise BackendUnavailable(f"inference backend {self.url} is saturated (429)")
        if response.status_code >= 500:
            raise self._down(f"it answered {response.status_code}: {_error_text(response)}")
        if response.status_code != 200:  # a request the backend calls bad: a bug or a changed model
            raise RuntimeError(
                f"inference backend {self.url} refused the call ({response.status_code}): "
                + _error_text(response)
            )
        return self._read_output(response, n)

    def close(self) -> None:
        self._stop.set()
        if self._probe is not None:
            self._probe.join(timeout=self.timeout_s + 1)
        self._client.close()

    # --- calls

    def _down(self, reason: str) -> BackendUnavailable:
        """Mark the backend unavailable (until a probe says ready) and return the exception for the batch."""
        message = f"inference backend {self.url} model {self.model}: {reason}"
        if self._unavailable is None:
            log.warning("%s; not ready until it is", message)
        self._unavailable = message
        return BackendUnavailable(message)

    def _read_output(self, response: httpx.Response, n: int) -> np.ndarray:
        body = response.content
        length = int(response.headers.get(HEADER_LENGTH, len(body)))
        header = json.loads(body[:length])
        output = self.spec.main.output
        item = next((o for o in header.get("outputs", []) if o.get("name") == output), None)
        expected = [n, *self.spec.image_shape]
        if item is None or item.get("datatype") != "UINT8" or item.get("shape") != expected:
            raise RuntimeError(
                f"inference backend {self.url} answered no UINT8 {expected} output {output!r}: {header}"
            )
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:  # JSON data: a backend that ignored binary_data
            return np.asarray(item["data"], dtype=np.uint8).reshape(expected)
        offset = length  # outputs' binary data follow the header in output order; this is the only one
        for other in header["outputs"]:
            if other is item:
                break
            offset += (other.get("parameters") or {}).get("binary_data_size", 0)
        return np.frombuffer(body, dtype=np.uint8, count=size, offset=offset).reshape(expected)

    def _watch(self, interval_s: float) -> None:
        """Probe the model's readiness every ``interval_s``: readiness (and whether batches are tried)
        follows it."""
        while not self._stop.wait(interval_s):
            try:
                response = self._client.get(self._model_path + "/ready")
            except httpx.TimeoutException:
                self._down(f"its readiness did not answer within {self.timeout_s:g} s")
                continue
            except httpx.TransportError as exc:
                self._down(f"cannot reach it ({_reason(exc)})")
                continue
            if response.status_code == 200:
                if self._unavailable is not None:
                    log.warning("inference backend %s model %s is ready again", self.url, self.model)
                self._unavailable = None
            else:
                self._down(f"its model is not ready ({response.status_code})")

    # --- the start-up check

    def _check_backend(self, wait_s: float) -> None:
        """Wait for the backend's model to be ready, then compare its metadata with the manifest."""
        deadline = time.monotonic() + wait_s
        where = f"GAN_INFERENCE_URL={self.url} model {self.model!r}"
        while True:
            try:
                ready = self._client.get(self._model_path + "/ready")
                if ready.status_code == 200:
                    break
                if ready.status_code in (401, 403):  # waiting will not help
                    raise StartupError(f"{where}: refused ({ready.status_code}: {_error_text(ready)})")
                problem = f"its model is not ready ({ready.status_code}: {_error_text(ready)})"
            except httpx.TransportError as exc:
                problem = f"no answer ({_reason(exc)})"
            if time.monotonic() >= deadline:
                raise StartupError(f"{where}: {problem} within {wait_s:g} s (GAN_INFERENCE_START_TIMEOUT_S)")
            time.sleep(START_POLL_S)
        try:
            metadata = self._get_json(self._model_path)
            server = self._get_json("/v2")
            card = self._gan_service_card() if server.get("name") == GAN_SERVICE else None
        except (httpx.HTTPError, ValueError) as exc:
            raise StartupError(f"{where}: cannot read its metadata ({_reason(exc)})") from None
        problems = metadata_problems(self.spec, metadata) + card_problems(self.spec, card)
        if problems:
            raise StartupError(f"{where} disagrees with the manifest: {'; '.join(problems)}")

    def _get_json(self, path: str) -> Any:
        response = self._client.get(path)
        if response.status_code != 200:
            raise ValueError(f"GET {path} answered {response.status_code}: {_error_text(response)}")
        return response.json()

    def _gan_service_card(self) -> dict[str, Any] | None:
        cards = self._get_json("/v1/models")
        return next((card for card in cards if card.get("name") == self.model), None)


def metadata_problems(spec: ModelSpec, metadata: dict[str, Any]) -> list[str]:
    """How the backend's v2 model metadata disagrees with the manifest (empty: it agrees). The batch axis
    may be -1 or any size; the label may be [N] or [N, 1] (Triton's reshape of a [N] input)."""
    graph = spec.main
    want = {
        graph.latent_input: ("FP32", [[spec.latent_dim]]),
        graph.condition_input: ("INT64", [[], [1]]),
    }
    problems = _tensor_problems("input", want, metadata.get("inputs"))
    out = {graph.output: ("UINT8", [list(spec.image_shape)])}
    return problems + _tensor_problems("output", out, metadata.get("outputs"))


def _tensor_problems(kind: str, want: dict[str, tuple[str, list[list[int]]]], given: Any) -> list[str]:
    tensors = {t.get("name"): t for t in given or [] if isinstance(t, dict)}
    problems = []
    if kind == "input" and set(tensors) - set(want):
        problems.append(f"inputs are {sorted(tensors)}, the manifest names {sorted(want)}")
    for name, (datatype, shapes) in want.items():
        tensor = tensors.get(name)
        expected = " or ".join(f"{datatype} {[-1, *shape]}" for shape in shapes)
        if tensor is None:
            problems.append(f"no {kind} {name!r} ({expected} in the manifest)")
            continue
        shape = tensor.get("shape")
        ok_shape = isinstance(shape, list) and len(shape) >= 1 and shape[1:] in shapes
        if tensor.get("datatype") != datatype or not ok_shape:
            problems.append(
                f"{kind} {name!r} is {tensor.get('datatype')} {shape}, the manifest implies {expected}"
            )
    return problems


def card_problems(spec: ModelSpec, card: dict[str, Any] | None) -> list[str]:
    """How a gan-serve backend's /v1/models card disagrees with the manifest: its labels and the sha256 of
    the graph it runs (the same seed must give the same bytes)."""
    if card is None:
        return []
    manifest, problems = spec.manifest, []
    if card.get("labels") != manifest.labels:
        problems.append(f"its labels are {card.get('labels')}, the manifest's {manifest.labels}")
    if card.get("conditional") != manifest.conditional:
        problems.append(f"it is conditional={card.get('conditional')}, the manifest {manifest.conditional}")
    if card.get("sha256") != spec.main.sha256:
        problems.append(f"it runs a graph of sha256 {card.get('sha256')}, the manifest's {spec.main.sha256}")
    return problems


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:200]
    except (ValueError, AttributeError):
        return response.text[:200]

"""ONNX Runtime sessions for a model directory: the last hop from a request to the model.

The batcher talks to an ``InferenceRuntime``: this module's ``Runtime`` (local sessions) or
``service.remote_runtime.RemoteRuntime`` (an Open Inference Protocol backend, ``GAN_INFERENCE_URL``).
Not thread-safe by design: the batcher calls ``run`` from its single inference thread only.
"""

from __future__ import annotations

import logging
import math
import os
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

try:
    import onnxruntime as ort
except ImportError as exc:  # neither runtime extra is installed
    raise ImportError("ONNX Runtime is not installed: install gan-service[cpu] or gan-service[gpu]") from exc

from contracts.model_dir import ModelDirError
from service.config import Settings, with_model_hints
from service.model_repo import Graph, ModelSpec

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# One fixed cuDNN convolution algorithm (not a timing benchmark per shape), so a latent's pixels do not depend
# on the batch it ran in or on the run
PROVIDER_OPTIONS: dict[str, dict[str, str]] = {CUDA: {"cudnn_conv_algo_search": "DEFAULT"}}
# On this few cores a second intra-op thread spin-waits and slows every call (reports/bench/NOTES.md)
SINGLE_THREAD_MAX_CORES = 2
CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")  # the `cpu` and `gpu` extras: one module


class StartupError(RuntimeError):
    """The service cannot run as configured (e.g. GAN_DEVICE=cuda without a working CUDA provider)."""


class GraphKind(StrEnum):
    MAIN = "main"  # (z, int64 label) -> image
    LABEL_MORPH = "label_morph"  # (z, float32 label weights) -> image
    ENCODER = "encoder"  # (uint8 image, int64 label) -> float32 latent: projection of real images


class InferenceRuntime(Protocol):
    """What the batcher, the routes and the metrics need of a runtime, local or remote."""

    spec: ModelSpec
    providers: list[str]  # what really runs the graphs, as /v1/models and gan_model_info report it
    intra_op_threads: int | None  # None: not this process's to say (a remote backend)
    # whether batches are padded to GAN_BATCH_BUCKETS (a few warmed-up shapes for a local session); a remote
    # backend gets the rows alone: padding would only add bytes on the network
    pads_batches: bool

    @property
    def graphs(self) -> tuple[GraphKind, ...]: ...

    @property
    def unavailable(self) -> str | None:
        """Why the runtime cannot serve now (readiness is false meanwhile), or None."""
        ...

    def run(self, kind: GraphKind, z: np.ndarray, condition: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def installed_runtimes() -> list[str]:
    found = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def choose_providers(device: str) -> list[str]:
    """The providers to ask for; what a session really runs on is checked once it exists (``Runtime``)."""
    if len(installed := installed_runtimes()) > 1:
        raise StartupError(
            f"both {' and '.join(installed)} are installed and overwrite each other's `onnxruntime` module: "
            "uninstall both, then install one extra (gan-service[cpu] or gan-service[gpu])"
        )
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise StartupError(
            f"GAN_DEVICE=cuda but ONNX Runtime offers only {available} (install onnxruntime-gpu)"
        )
    if device == "cuda" or (device == "auto" and CUDA in available):
        return [CUDA, CPU]
    return [CPU]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """This process's cgroup CPU quota in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); None: no quota."""
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu"
        if (v1 / "cpu.cfs_quota_us").is_file():
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


def available_cores(root: Path = CGROUP_ROOT) -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a pod limited to
    2 CPUs on a 64-core node has 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def intra_op_threads(settings: Settings, cores: int | None = None) -> int:
    """``GAN_INTRA_OP_THREADS`` when set, else 1 on small machines and the cores shared among the workers."""
    if settings.intra_op_threads:
        return settings.intra_op_threads
    cores = cores if cores is not None else available_cores()
    if cores <= SINGLE_THREAD_MAX_CORES:
        return 1
    return max(1, cores // max(1, settings.workers))  # workers 0 (auto) is resolved by gan-serve


def interactive_on_loop(settings: Settings, runtime: InferenceRuntime, cores: int | None = None) -> bool:
    """Whether interactive batches run on the event loop (``GAN_INTERACTIVE_BATCHES``; auto: where the worker
    has at most one core to itself, a local CPU session of one thread with ``workers >= cores``). There a
    separate inference thread only takes turns with the loop on the same core, and each batch costs two
    hand-offs and the wait for the interpreter lock: on the loop, 4,491-4,681 single-image req/s against
    4,247-4,295 at 64 clients, 2,583-2,769 against 2,357-2,439 at 8, in alternating rounds on 2 cores
    (reports/bench/NOTES.md)."""
    if settings.interactive_batches != "auto":
        return settings.interactive_batches == "loop"
    if runtime.intra_op_threads != 1 or runtime.providers[0] != CPU:  # a remote backend, a GPU, a pool
        return False
    cores = cores if cores is not None else available_cores()
    return max(1, settings.workers) >= cores  # workers 0 (auto) is resolved by gan-serve


def inference_streams(settings: Settings, runtime: InferenceRuntime, cores: int | None = None) -> int:
    """Batches of bulk work one worker may run at once (``GAN_BULK_INFERENCE_STREAMS``; 0: every core busy
    with sessions of ``intra_op_threads`` on the CPU). One ORT session takes concurrent calls; for this
    model two one-thread calls at once make about twice the images of one, two threads per call about 1.2x
    (reports/bench/NOTES.md)."""
    if settings.bulk_inference_streams:
        return settings.bulk_inference_streams
    if runtime.intra_op_threads is None or runtime.providers[0] != CPU:  # a remote backend, a GPU
        return 1
    cores = cores if cores is not None else available_cores()
    return max(1, cores // runtime.intra_op_threads)


def call_max_rows(settings: Settings, providers: list[str]) -> int | None:
    """Most rows per ORT call (``GAN_ORT_CALL_MAX_ROWS``; 0: ``max_batch`` on the CPU, None (no limit) on a
    GPU). On this model's CPU path a call's cost per image grows with its size past max_batch (two concurrent
    calls, medians of six 1.5 s timings: 15,398 images/s at 64 rows, 14,919 at 128, 14,875 at 256), while the
    batcher gains from fewer, larger hand-offs: so a bulk batch is handed over whole and run in calls of
    max_batch (reports/bench/NOTES.md)."""
    if settings.ort_call_max_rows:
        return settings.ort_call_max_rows
    return settings.max_batch if providers[0] == CPU else None


class Runtime:
    def __init__(self, spec: ModelSpec, settings: Settings):
        self.spec = spec
        self.device = settings.device
        self.requested = choose_providers(settings.device)
        self.providers = self.requested  # replaced by what the main session really runs on
        options = ort.SessionOptions()
        self.intra_op_threads = intra_op_threads(settings)
        options.intra_op_num_threads = self.intra_op_threads
        if self.intra_op_threads > 1:  # idle pool threads sleep instead of burning a core between calls
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = settings.inter_op_threads
        options.use_deterministic_compute = True  # the same latent gives the same bytes, whatever the batch
        options.log_severity_level = 3
        main = self._session(spec.main, options)
        self.providers = main.get_providers()
        # on the CPU a padded row costs as much as a real one and a new batch shape needs no warm-up (a first
        # call at 13 rows: 2.02 ms against 1.95 after): batches run at their own size there (at 64 clients,
        # 14 % more req/s than padded to powers of two), unless GAN_BATCH_BUCKETS asks for pad sizes
        self.pads_batches = self.providers[0] != CPU or bool(settings.batch_buckets)
        # the model's batch hint (an autoregressive model: small calls) bounds the calls, as it bounds batches
        self.call_max_rows = call_max_rows(
            with_model_hints(settings, spec.manifest.max_batch_hint), self.providers
        )
        self._graphs: dict[GraphKind, tuple[Graph, ort.InferenceSession]] = {
            GraphKind.MAIN: (spec.main, main)
        }
        if spec.label_morph is not None:
            morph = spec.label_morph
            self._graphs[GraphKind.LABEL_MORPH] = (morph, self._session(morph, options))
        if spec.encoder is not None:
            self._graphs[GraphKind.ENCODER] = (spec.encoder, self._session(spec.encoder, options))

    @property
    def graphs(self) -> tuple[GraphKind, ...]:
        return tuple(self._graphs)

    @property
    def unavailable(self) -> str | None:
        return None  # a loaded session stays loaded

    def close(self) -> None:
        pass  # the sessions go with the object

    def run(self, kind: GraphKind, z: np.ndarray, condition: np.ndarray) -> np.ndarray:
        """``z`` float32 [N, latent_dim], ``condition`` int64 labels [N] or float32 label weights [N, K]
        → uint8 images [N, H, W, C]; in calls of at most ``call_max_rows`` rows, one after another."""
        graph, session = self._graphs[kind]

        def call(rows: slice) -> np.ndarray:
            feed = {graph.latent_input: z[rows], graph.condition_input: condition[rows]}
            return session.run([graph.output], feed)[0]

        step = self.call_max_rows or len(z)
        if len(z) <= step:
            return call(slice(None))
        return np.concatenate([call(slice(start, start + step)) for start in range(0, len(z), step)])

    def _session(self, graph: Graph, options: ort.SessionOptions) -> ort.InferenceSession:
        try:
            providers = [(name, PROVIDER_OPTIONS.get(name, {})) for name in self.requested]
            session = ort.InferenceSession(str(graph.path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            raise ModelDirError(f"{graph.path}: ONNX Runtime cannot load it ({exc})") from exc
        self._check_signature(graph, session)
        self._check_device(graph, session.get_providers())
        log.info("loaded %s on %s", graph.path.name, session.get_providers()[0])
        return session

    def _check_device(self, graph: Graph, actual: list[str]) -> None:
        """ONNX Runtime falls back to the CPU when the CUDA provider cannot load (for example CUDA libraries
        of another major version than the onnxruntime-gpu build's) and only logs it: refuse or say so."""
        if CUDA not in self.requested or CUDA in actual:
            return
        if self.device == "cuda":
            raise StartupError(
                f"GAN_DEVICE=cuda but ONNX Runtime {ort.__version__} could not start its CUDA provider for "
                f"{graph.path.name} (the session would run on {actual}): are the CUDA libraries this "
                "onnxruntime-gpu build needs installed?"
            )
        log.warning("the CUDA provider did not load for %s: serving on the CPU (%s)", graph.path.name, actual)

    def _check_signature(self, graph: Graph, session: ort.InferenceSession) -> None:
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        if set(inputs) != {graph.latent_input, graph.condition_input}:
            raise ModelDirError(
                f"{graph.path}: graph inputs are {sorted(inputs)}, the manifest names "
                f"{sorted([graph.latent_input, graph.condition_input])}"
            )
        if graph.output not in outputs:
            raise ModelDirError(f"{graph.path}: no output {graph.output!r} (outputs: {sorted(outputs)})")
        if graph is self.spec.encoder:  # (image, label) -> latent [N, latent_dim]
            if (shape := outputs[graph.output].shape)[1:] != [self.spec.latent_dim]:
                raise ModelDirError(f"{graph.path}: latent shape {shape}, not [N, {self.spec.latent_dim}]")
            return
        expected = list(self.spec.image_shape)
        shape = outputs[graph.output].shape
        if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != expected:
            raise ModelDirError(f"{graph.path}: output shape {shape}, the manifest implies [N, {expected}]")
        latent_shape = inputs[graph.latent_input].shape
        if len(latent_shape) != 2 or latent_shape[1] != self.spec.latent_dim:
            raise ModelDirError(
                f"{graph.path}: latent input shape {latent_shape}, manifest latent_dim is "
                f"{self.spec.latent_dim}"
            )

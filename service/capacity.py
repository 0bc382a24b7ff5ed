"""``GAN_WORKERS=auto``: how many worker processes, and ONNX Runtime threads in each, from the measured
balance between a request's Python work and the model's.

The threads of one process share one interpreter lock, so a process answers at most ``1 / g`` requests a
millisecond, where ``g`` is the CPU time per answer that holds the lock (the event loop's parsing, scheduling
and writing, latent sampling, the hand-offs with the inference thread). The model's ``m`` ms per image run in
ONNX Runtime outside the lock, on its intra-op threads. ``c`` cores answer at most ``c / (g + m)``, so
reaching that takes ``w = ceil(c * g / (g + m))`` processes (at most ``c``), and the model's share of the
cores, ``c * m / (g + m)``, spread over them gives each ``max(1, round(c * m / ((g + m) * w)))`` threads.

``m`` is measured at start-up: the served graph on one thread at ``GAN_MAX_BATCH``. ``g`` is
``GAN_REQUEST_CPU_MS``, the figure ``gan-bench`` measures (its *balance* line: the service's CPU per
single-image answer less the model's per image); its default is that figure from the 2026-12-01 06:07
reference run. The figure moves with the host's speed, as ``m`` does (0.45-1.23 ms across this 2-core
machine's runs); on 2 cores every value from ~0.1 ms up chooses the same 2 workers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from service.runtime import GraphKind, InferenceRuntime

MEASURE_REPEATS = 5  # timed calls after one warm-up call; the fastest counts (the least disturbed)


@dataclass(frozen=True)
class Balance:
    cores: int
    request_ms: float  # g: CPU ms per answer holding the interpreter lock
    model_ms: float  # m: model ms per image on one thread
    workers: int
    threads: int

    def describe(self) -> str:
        return (
            f"{self.workers} worker(s) x {self.threads} ONNX Runtime thread(s) on {self.cores} core(s): "
            f"{self.request_ms:.3f} ms of Python per answer (GAN_REQUEST_CPU_MS) against "
            f"{self.model_ms:.3f} ms of model per image (measured)"
        )


def choose(cores: int, request_ms: float, model_ms: float) -> Balance:
    """Workers and threads per worker for ``cores`` cores (see the module docstring)."""
    if cores < 1 or request_ms <= 0 or model_ms < 0:
        raise ValueError(
            f"need cores >= 1, request_ms > 0, model_ms >= 0; got {cores}, {request_ms}, {model_ms}"
        )
    total = request_ms + model_ms
    workers = min(cores, max(1, math.ceil(cores * request_ms / total - 1e-9)))
    threads = max(1, round(cores * model_ms / (total * workers)))
    return Balance(cores, request_ms, model_ms, workers, threads)


def model_ms_per_image(runtime: InferenceRuntime, latent_dim: int, batch: int) -> float:
    """Wall ms per image of the served graph at ``batch`` (the fastest of a few calls after a warm-up)."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((batch, latent_dim), dtype=np.float32)
    labels = np.zeros(batch, dtype=np.int64)
    runtime.run(GraphKind.MAIN, z, labels)
    best = math.inf
    for _ in range(MEASURE_REPEATS):
        started = time.perf_counter()
        runtime.run(GraphKind.MAIN, z, labels)
        best = min(best, time.perf_counter() - started)
    return best * 1000.0 / batch

"""``GAN_WORKERS=auto``: how many worker processes, and ONNX Runtime threads in each, from the measured
balance between a request's Python work and the model's.

The threads of one process share one interpreter lock, so a process answers at most ``1 / g`` requests a
millisecond, where ``g`` is the CPU time per answer that holds the lock (the event loop's parsing, scheduling
and writing, latent sampling, the hand-offs with the inference thread). The model's ``m`` ms per image run in
ONNX Runtime outside the lock, on its intra-op threads. ``c`` cores answer at most ``c / (g + m)``. ``w``
processes with ``t`` threads each answer at most ``min(w / g, w * t / m)``: the lock-bound work and the model
threads must both keep up. Each of ``w`` processes gets its share of the model's part of the cores,
``t = max(1, round(c * m / ((g + m) * w)))`` threads, and the choice is the fewest processes (at most ``c``)
that reach the machine's limit, ``w = ceil(c * g / (g + m))`` unless rounding ``t`` leaves the model short:
on 2 cores one process with one model thread answers at most ``min(1 / g, 1 / m)``, short of
``2 / (g + m)`` unless ``g = m``, so 2 cores always get 2 processes.

``m`` is measured at start-up: the served graph on one thread at ``GAN_MAX_BATCH``. ``g`` is
``GAN_REQUEST_CPU_MS``, the figure ``gan-bench`` measures (its *balance* line: the service's CPU per
single-image answer less the model's per image); its default is that figure from the 2026-12-03 07:03
reference run (0.217 ms; 0.72 before that day's per-worker sockets, unpadded CPU batches and batches on the
loop). The figure moves with the host's speed and the code, as ``m`` does (0.14-0.36 ms in this 2-core
machine's runs).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from service.runtime import GraphKind, InferenceRuntime

MEASURE_REPEATS = 5  # timed calls after one warm-up call; the fastest counts (the least disturbed)
RATE_TOLERANCE = 1e-9  # relative: a rate short of the limit by floating-point rounding only reaches it


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
    limit = cores / total  # answers per ms

    def threads(workers: int) -> int:
        return max(1, round(cores * model_ms / (total * workers)))

    def keeps_up(workers: int) -> bool:
        model_rate = workers * threads(workers) / model_ms if model_ms else math.inf
        return min(workers / request_ms, model_rate) >= limit * (1 - RATE_TOLERANCE)

    # a process per core always keeps up: each needs 1 / (g + m) answers a ms; its model thread gives 1 / m
    workers = next((w for w in range(1, cores) if keeps_up(w)), cores)
    return Balance(cores, request_ms, model_ms, workers, threads(workers))


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

"""The parts of a request, each timed alone in this process: the generator on ONNX Runtime (through the
service's own ``Runtime``, so the session options are the served ones), PNG encoding and latent sampling
(the service's own functions). Times are medians of repeated calls, robust to a busy shared machine."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contracts import latents
from service import encoding
from service.config import Settings
from service.model_repo import load_model_dir
from service.runtime import CUDA, GraphKind, Runtime


@dataclass(frozen=True)
class Timing:
    seconds: float  # median wall time of one call
    calls: int
    cpu_seconds: float  # mean CPU time of one call, every thread of this process (ORT's pool included)


def time_call(
    fn: Callable[[], object], min_seconds: float, min_calls: int = 3, max_calls: int = 10_000
) -> Timing:
    """Median duration of ``fn()`` over at least ``min_calls`` calls and ``min_seconds`` (after a warm-up),
    and its mean CPU time (more than the wall time when several threads work, or spin)."""
    fn()
    durations: list[float] = []
    spent = 0.0
    cpu_start = time.process_time()
    while len(durations) < max_calls and (len(durations) < min_calls or spent < min_seconds):
        start = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - start)
        spent += durations[-1]
    cpu = (time.process_time() - cpu_start) / len(durations)
    return Timing(statistics.median(durations), len(durations), cpu)


class Generator:
    """The served graph on ONNX Runtime, built the way the service builds it."""

    def __init__(self, model_dir: Path, device: str = "cpu", variant: str | None = None, threads: int = 0):
        settings = Settings(
            model_dir=model_dir, device=device, model_variant=variant, intra_op_threads=threads
        )
        self.spec = load_model_dir(model_dir, variant)
        self.runtime = Runtime(self.spec, settings)
        self.runtime.call_max_rows = None  # raw ORT: every call the size asked for
        self.rng = np.random.default_rng(0)

    @property
    def provider(self) -> str:
        return self.runtime.providers[0]

    def inputs(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        z = self.rng.standard_normal((batch, self.spec.latent_dim), dtype=np.float32)
        labels = self.rng.integers(0, self.spec.num_classes, batch, dtype=np.int64)
        return z, labels

    def run(self, batch: int) -> np.ndarray:
        return self.runtime.run(GraphKind.MAIN, *self.inputs(batch))

    def concurrent(self, size: int, streams: int, seconds: float) -> float:
        """Images/s of ``streams`` threads calling the one session at once with batches of ``size``, as the
        service's bulk inference streams do."""
        z, labels = self.inputs(size)
        self.runtime.run(GraphKind.MAIN, z, labels)
        counts = [0] * streams
        start = time.perf_counter()

        def call(stream: int) -> None:
            while time.perf_counter() - start < seconds:
                self.runtime.run(GraphKind.MAIN, z, labels)
                counts[stream] += size

        threads = [threading.Thread(target=call, args=(i,)) for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - start)

    def sweep(self, sizes: Iterable[int], min_seconds: float) -> dict[int, Timing]:
        timings = {}
        for size in sizes:
            z, labels = self.inputs(size)
            timings[size] = time_call(
                lambda z=z, labels=labels: self.runtime.run(GraphKind.MAIN, z, labels), min_seconds
            )
        return timings


def png_seconds_per_image(images: np.ndarray, min_seconds: float) -> Timing:
    """One PNG per request, as ``POST /generate`` answers a single image (median over the given images)."""
    index = iter(range(1 << 62))
    return time_call(lambda: encoding.png_response(images[next(index) % len(images)][None]), min_seconds)


def latent_seconds_per_request(latent_dim: int, min_seconds: float) -> Timing:
    seeds = iter(range(1 << 62))
    return time_call(lambda: latents.request_latents(next(seeds), 1, latent_dim), min_seconds)


def gpu_available() -> bool:
    return CUDA in ort.get_available_providers()

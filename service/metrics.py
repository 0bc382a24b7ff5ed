"""Prometheus metrics, one registry per app (so several apps in one process never collide).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``gan-serve`` sets it when it runs several workers, see
``service.workers``) prometheus-client keeps every value in a per-process file of that directory, and a scrape
reads them all through a ``MultiProcessCollector``. Each gauge then says how the workers' values combine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.mmap_dict import MmapedDict

from contracts.buckets import batch_buckets

disable_created_metrics()  # the *_created series only add noise to every scrape

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own switch to multiprocess mode
READY = "gan_ready"
READY_FILES = "gauge_livemin_*.db"  # each worker's livemin gauges (gan_ready's mode), named by its pid


def workers_ready(directory: str) -> int:
    """How many workers' files in the multiprocess directory hold gan_ready 1. A worker that has left is not
    counted: gan-serve's supervisor removes its live gauges' file (``mark_process_dead``)."""
    ready = 0
    for path in Path(directory).glob(READY_FILES):
        try:
            entries = MmapedDict.read_all_values_from_file(str(path))
        except OSError:  # removed meanwhile: a worker that left
            continue
        ready += any(json.loads(entry[0])[0] == READY and entry[1] == 1 for entry in entries)
    return ready


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _batch_buckets(max_batch: int) -> tuple[float, ...]:
    return tuple(float(size) for size in batch_buckets(max_batch))


METRICS_STATE = "gan.metrics"  # the app's Metrics in the lifespan state the server holds (service.server)


class Metrics:
    def __init__(self, max_batch: int):
        self.registry = CollectorRegistry()
        r = self.registry
        # what /metrics serves: this registry, or (several workers) the sum of every worker's files
        self.multiprocess = bool(os.environ.get(MULTIPROC_DIR_ENV))
        self._exposed = r
        if self.multiprocess:
            self._exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed)
        # process_* (CPU seconds, resident memory, open files) of the process answering the scrape: with
        # several workers, that worker's own (the library cannot sum them across processes)
        ProcessCollector(registry=self._exposed)
        self.requests = Counter(
            "gan_http_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "gan_http_request_duration_seconds",
            "Time to answer a request (to the last byte)",
            ["endpoint", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # livesum: the service's queue is the sum of the live workers' queues
        self.queue_depth = Gauge(
            "gan_queue_depth_images",
            "Images waiting for a batch",
            ["lane"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.batch_size = Histogram(
            "gan_batch_size",
            "Latents per inference call (before padding)",
            buckets=_batch_buckets(max_batch),
            registry=r,
        )
        self.batch_padding = Counter(
            "gan_batch_padding_rows", "Rows added to reach a bucket size", registry=r
        )
        self.batch_seconds = Histogram(
            "gan_batch_inference_seconds",
            "Duration of one inference call",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "gan_request_queue_wait_seconds",
            "Time a generation job waited before its first batch ran",
            ["lane"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "gan_request_compute_seconds",
            "Inference time of the batches that carried a generation job",
            ["lane"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter("gan_images_generated", "Images delivered to callers", ["lane"], registry=r)
        self.connections_refused = Counter(
            "gan_connections_refused",
            "Connections answered 503 at the connection limit (GAN_MAX_CONNECTIONS), their request unread",
            registry=r,
        )
        self.dropped = Counter(
            "gan_jobs_dropped", "Generation jobs not completed", ["reason"], registry=r
        )  # reasons: queue_full, deadline, cancelled, error
        self.bulk_streams = Gauge(
            "gan_bulk_streams", "Bulk streams in progress", multiprocess_mode="livesum", registry=r
        )
        # livemin: any live worker may take the next connection, so the service is ready when all of them are
        # (a worker still warming up or draining shows 0)
        self.ready = Gauge(
            READY,
            "1 once the model is loaded and every batch size warmed up",
            multiprocess_mode="livemin",
            registry=r,
        )

        # livemax: one series per distinct (model, provider, threads) among the live workers, no pid label
        self.model_info = Gauge(
            "gan_model_info",
            "The served model and what really runs it (value 1)",
            ["model", "version", "provider", "intra_op_threads"],
            multiprocess_mode="livemax",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self._exposed)

    def retire(self) -> None:
        """This worker is stopping: with several workers, drop its live gauges from the shared view (a worker
        that dies without stopping is marked dead by ``gan-serve``'s supervisor instead)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())

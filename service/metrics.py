"""Prometheus metrics, one registry per app (so several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # the *_created series only add noise to every scrape

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _batch_buckets(max_batch: int) -> tuple[float, ...]:
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(float(size))
        size *= 2
    return (*sizes, float(max_batch))


class Metrics:
    def __init__(self, max_batch: int):
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.queue_depth = Gauge("gan_queue_depth_images", "Images waiting for a batch", ["lane"], registry=r)
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
        self.dropped = Counter(
            "gan_jobs_dropped", "Generation jobs not completed", ["reason"], registry=r
        )  # reasons: queue_full, deadline, cancelled, error
        self.bulk_streams = Gauge("gan_bulk_streams", "Bulk streams in progress", registry=r)
        self.ready = Gauge(
            "gan_ready", "1 once the model is loaded and every batch size warmed up", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

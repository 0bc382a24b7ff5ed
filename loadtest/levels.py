"""Load levels against a running server, as the benchmark measures them: a window of closed-loop load with
the server's own view of it (``/metrics`` before and after: batch sizes formed, inference time), CPU per
answer, and single big pulls (bulk delivery)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest import checks, server, stats, traffic
from loadtest.checks import CheckFailed, ModelInfo, model_info
from loadtest.http1 import Connection
from loadtest.loadgen import LevelResult, run_level
from loadtest.probes import CpuMeter, cpu_usage


@dataclass(frozen=True)
class Plan:
    seconds: float  # measuring window
    warmup_s: float  # load before the window
    seed: int


class MetricsScraper:
    """``/metrics`` at the start and end of a window, for the server-side view of the same requests."""

    def __init__(self, url: str):
        self.url = url
        self.before: stats.Samples = {}
        self.after: stats.Samples = {}

    async def _scrape(self) -> stats.Samples:
        connection = Connection(self.url)
        try:
            answer = await connection.request("GET", "/metrics")
        finally:
            await connection.close()
        return stats.parse_metrics(answer.body.decode())

    async def start(self) -> None:
        self.before = await self._scrape()

    async def end(self) -> None:
        self.after = await self._scrape()

    def window(self) -> dict[str, Any]:
        b, a = self.before, self.after
        batches = stats.histogram_delta(b, a, "gan_batch_size")
        inference = stats.histogram_delta(b, a, "gan_batch_inference_seconds")
        return {
            "batch_histogram": {f"{bound:g}": count for bound, count in batches.buckets.items() if count},
            "batches": batches.count,
            "batched_images": batches.sum,
            "mean_batch": batches.mean(),
            "inference_ms_per_image": 1000 * inference.sum / batches.sum if batches.sum else None,
            "server_requests": stats.total_delta(b, a, "gan_http_requests_total", {"endpoint": "/generate"}),
        }


def per_request(per_second: float, rps: float) -> float | None:
    return per_second / rps if rps else None


def level_record(result: LevelResult, scraper: MetricsScraper | None) -> dict[str, Any]:
    summary = stats.summarize(result.latencies_s, result.seconds)
    record = {
        "concurrency": result.concurrency,
        **summary.as_dict(),
        "errors": result.error_count,
        "error_samples": dict(result.errors.most_common(3)),
        "images_per_s": result.images / result.seconds,
        "cpu": result.cpu,
        "client_cpu_us_per_request": per_request(1e6 * result.cpu.get("client_cores", 0), summary.rps),
        # CPU per answer is steadier than req/s on a shared machine: it does not depend on the cores we got
        "server_cpu_ms_per_request": per_request(1e3 * result.cpu.get("server_cores", 0), summary.rps),
    }
    if scraper is not None:
        record["server"] = scraper.window()
    return record


def sweep(
    srv: server.Server, info: ModelInfo, concurrencies: list[int], plan: Plan, label: str
) -> list[dict[str, Any]]:
    """Single-image requests at each concurrency, with the server's batch-size histogram of each window."""
    records = []
    for concurrency in concurrencies:
        scraper = MetricsScraper(srv.url)
        result = run_level(
            srv.url,
            traffic.single_image,
            concurrency,
            plan.seconds,
            warmup_s=plan.warmup_s,
            seed=plan.seed,
            server_pid=srv.pid,
            on_start=scraper.start,
            on_end=scraper.end,
            info=info,
        )
        records.append(level_record(result, scraper))
        r, batch = records[-1], records[-1]["server"]["mean_batch"] or 0
        print(
            f"  {label} c={concurrency:<4} {r['rps']:8.1f} req/s  p50 {r['p50_ms'] or 0:7.1f} ms  "
            f"p99 {r['p99_ms'] or 0:7.1f} ms  errors {r['errors']}  mean batch {batch:.1f}"
        )
    return records


def single(
    srv: server.Server, factory: traffic.Factory, info: ModelInfo, concurrency: int, plan: Plan
) -> dict[str, Any]:
    result = run_level(
        srv.url,
        factory,
        concurrency,
        plan.seconds,
        warmup_s=plan.warmup_s,
        seed=plan.seed,
        server_pid=srv.pid,
        info=info,
    )
    return level_record(result, None)


def _healthz_check(status: int, content_type: str | None, body: bytes) -> None:
    checks.status(status, content_type, "application/json")


def healthz(rng: random.Random, info: ModelInfo) -> traffic.Call:
    """The service's cheapest route: the framework plus the service's middleware (request id, metrics,
    access log), no model."""
    return traffic.Call("GET /healthz", "/healthz", "GET", _healthz_check)


async def pull(url: str, call: traffic.Call) -> dict[str, Any]:
    """One request, timed to its last byte, then checked."""
    connection = Connection(url, timeout_s=600)
    meter = CpuMeter()
    try:
        body = json.dumps(call.body).encode() if call.body is not None else None
        first, start = meter.read(), time.perf_counter()
        answer = await connection.request(call.method, call.url, body)
        seconds, last = time.perf_counter() - start, meter.read()
    finally:
        await connection.close()
    error = None
    try:
        call.check(answer.status, answer.content_type, answer.body)
    except CheckFailed as exc:
        error = str(exc)
    return {
        "images": call.images,
        "seconds": seconds,
        "images_per_s": call.images / seconds,
        "bytes": len(answer.body),
        "error": error,
        "client_cores": cpu_usage(first, last)["client_cores"],
    }


@dataclass(frozen=True)
class BulkReference:
    """Raw ORT run as the bulk path runs it, timed before each measured ``/v1/bulk`` pull and after the last,
    so the pulls and their reference see the machine at the same moments (its speed drifts by more than the
    target's margin over a run)."""

    label: str
    measure: Callable[[], float]  # images/s


def bulk_delivery(
    srv: server.Server,
    info: ModelInfo,
    bulk_n: int,
    repeats: int,
    seed: int,
    reference: BulkReference | None = None,
) -> dict[str, Any]:
    """Images/s one client receives from ``/v1/bulk`` (.npz stream) and ``/generate?n=1024&format=npy``; with
    ``reference``, the /v1/bulk pulls interleaved with it."""
    rng = random.Random(seed)
    kinds = {
        "v1_bulk_npz": lambda: traffic.bulk(rng, info, bulk_n),
        "generate_npy_1024": lambda: traffic.npy_batch(rng, info, 1024),
    }
    results = {}
    for name, make in kinds.items():
        asyncio.run(pull(srv.url, make()))  # warm-up pull
        between = reference if reference is not None and name == "v1_bulk_npz" else None
        references = [between.measure()] if between else []
        pulls = []
        for _ in range(repeats):
            pulls.append(asyncio.run(pull(srv.url, make())))
            if between:
                references.append(between.measure())
        results[name] = {
            "pulls": pulls,
            "images_per_s": float(np.mean([p["images_per_s"] for p in pulls])),
            "errors": sum(p["error"] is not None for p in pulls),
        }
        if between:
            results[name]["reference"] = {"label": between.label, "images_per_s": references}
        print(f"  bulk {name}: {results[name]['images_per_s']:.0f} img/s received")
    return results


def model_info_of(url: str) -> ModelInfo:
    async def fetch() -> ModelInfo:
        connection = Connection(url)
        try:
            answer = await connection.request("GET", "/v1/models")
        finally:
            await connection.close()
        return model_info(json.loads(answer.body))

    return asyncio.run(fetch())

"""`gan-serve` with two workers: one scrape of /metrics counts the work of both, a worker that dies keeps its
counters but not its live gauges, and the private metrics directory is gone once the server stops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector
from service_support import READY_TIMEOUT_S, REPO_ROOT, free_port, start_server, stop_server
from test_service_live import raw_post
from test_service_ops import metric_value

from service.metrics import workers_ready

ROUND = 8  # concurrent requests (each on its own connection, so the kernel spreads them over the workers)
MAX_ROUNDS = 50
IMAGES_PER_REQUEST = 3
SETTLE_S = 10.0  # a worker counts a request just after its answer is sent: a scrape may briefly lag behind
# the supervisor notices a dead worker on its next health round, which pings the live ones first, each given
# up to GAN_WORKER_HEALTHCHECK_S (30) to answer: on a loaded machine that round can take a while
DEPARTED_S = 30.0 + SETTLE_S


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def worker_files(metrics_dir: Path, kind: str) -> dict[int, Path]:
    """pid -> that worker's file of one kind (``counter``, ``gauge_livesum``, ``gauge_livemin`` ...)."""
    return {int(path.stem.rsplit("_", 1)[1]): path for path in metrics_dir.glob(f"{kind}_*.db")}


def generate_requests(counter_file: Path) -> float:
    """/generate requests one worker has counted, read from its own file."""
    families = MultiProcessCollector.merge([str(counter_file)])
    return sum(
        sample.value
        for family in families
        if family.name == "gan_http_requests"
        for sample in family.samples
        if sample.labels.get("endpoint") == "/generate"
    )


def test_two_workers_share_one_metrics_view(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where gan-serve makes its private metrics directory
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(port, workers=2, drain_s=0, max_batch=8)
    try:
        eventually(lambda: len(list(tmp_path.glob("gan-serve-metrics-*"))) == 1, READY_TIMEOUT_S, "no dir")
        [metrics_dir] = tmp_path.glob("gan-serve-metrics-*")
        assert metrics_dir.stat().st_mode & 0o077 == 0  # private to the server's user

        def scrape() -> str:
            try:
                return httpx.get(url + "/metrics").text
            except httpx.TransportError:
                return ""

        def both_ready() -> bool:  # gan_ready is the least over live workers: 1 once both are warm
            started = len(worker_files(metrics_dir, "gauge_livemin")) == 2
            return started and metric_value(scrape(), "gan_ready") == 1

        eventually(both_ready, READY_TIMEOUT_S, "two warm workers")
        for _ in range(ROUND):  # whichever worker answers: the server's readiness
            ready = httpx.get(url + "/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"

        async def burst(first: int) -> list[tuple[int, dict[str, str]]]:
            seeds = range(first, first + ROUND)
            targets = [f"/generate?label={i % 10}&n={IMAGES_PER_REQUEST}&seed={i}" for i in seeds]
            return await asyncio.gather(*(raw_post("127.0.0.1", port, target) for target in targets))

        sent = 0
        for _ in range(MAX_ROUNDS):  # until both workers have answered some
            assert all(status == 200 for status, _ in asyncio.run(burst(sent)))
            sent += ROUND
            counters = worker_files(metrics_dir, "counter")
            if sum(generate_requests(path) > 0 for path in counters.values()) == 2:
                break
        per_worker = {pid: generate_requests(path) for pid, path in counters.items()}
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker

        def counted(text: str) -> float:
            return metric_value(text, "gan_http_requests_total", endpoint="/generate", status="200")

        eventually(lambda: counted(scrape()) == sent, SETTLE_S, f"one scrape counts all {sent} requests")
        text = scrape()
        assert counted(text) == sent
        images = metric_value(text, "gan_images_generated_total", lane="interactive")
        assert images == sent * IMAGES_PER_REQUEST
        assert metric_value(text, "gan_http_request_duration_seconds_count", endpoint="/generate") == sent
        for lane in ("interactive", "bulk"):  # livesum: one series per lane, no pid label
            assert f'gan_queue_depth_images{{lane="{lane}"}} 0.0' in text
        assert "pid=" not in text
        assert metric_value(text, "gan_ready") == 1

        # a worker killed outright: the supervisor marks it dead (live gauges gone), its counters still count
        victim = min(per_worker)
        os.kill(victim, signal.SIGKILL)
        eventually(
            lambda: (
                victim not in worker_files(metrics_dir, "gauge_livesum")
                and victim not in worker_files(metrics_dir, "gauge_livemin")
            ),
            DEPARTED_S,
            "the dead worker's live gauges were never removed",
        )
        assert victim in worker_files(metrics_dir, "counter")
        assert counted(scrape()) == sent
    finally:
        stop_server(process)
    assert process.returncode == 0
    assert not list(tmp_path.glob("gan-serve-metrics-*")), "the metrics directory outlived the server"


def test_readiness_counts_the_workers_whose_files_say_ready(tmp_path):
    """/readyz with several workers is 200 only when every worker's gan_ready is 1: counted from each worker's
    own file, as three processes (two ready, one warming up) leave them."""
    script = "import sys; from service.metrics import Metrics; Metrics(8).ready.set(int(sys.argv[1]))"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for value in (1, 0, 1):
        subprocess.run(
            [sys.executable, "-c", script, str(value)], env=env, cwd=REPO_ROOT, check=True, timeout=60
        )
    assert len(worker_files(tmp_path, "gauge_livemin")) == 3
    assert workers_ready(str(tmp_path)) == 2
    assert workers_ready(str(tmp_path / "nothing-here")) == 0


def test_a_ready_worker_answers_not_ready_while_another_warms_up(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from service.routes.ops import readiness

    script = "import sys; from service.metrics import Metrics; Metrics(8).ready.set(int(sys.argv[1]))"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for value in (1, 0):  # this worker (warm) and another still warming up
        subprocess.run(
            [sys.executable, "-c", script, str(value)], env=env, cwd=REPO_ROOT, check=True, timeout=60
        )
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    warm = SimpleNamespace(ready=True, failed=None, runtime=SimpleNamespace(unavailable=None))
    ctx = SimpleNamespace(
        lifecycle=SimpleNamespace(batcher=warm, draining=False),
        settings=SimpleNamespace(workers=2),
        metrics=SimpleNamespace(multiprocess=True),
    )
    assert readiness(ctx) == (False, "warming up: 1 of 2 workers ready")
    subprocess.run([sys.executable, "-c", script, "1"], env=env, cwd=REPO_ROOT, check=True, timeout=60)
    ctx.settings.workers = 3  # a third worker, warm: two of three ready, still not the server
    assert readiness(ctx) == (False, "warming up: 2 of 3 workers ready")
    ctx.settings.workers = 2  # as many ready as GAN_WORKERS: ready
    assert readiness(ctx) == (True, "ready")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")

"""``GAN_WORKERS=auto``: workers and ONNX Runtime threads from the balance of Python work per answer and model
work per image (``service.capacity``), measured on the served graph when gan-serve starts."""

from __future__ import annotations

import re
import signal

import httpx
import pytest
from service_support import READY_TIMEOUT_S, free_port, make_settings, start_server, wait_ready

from service.capacity import choose, model_ms_per_image
from service.config import with_model_hints
from service.main import load_spec
from service.runtime import Runtime, available_cores


@pytest.mark.parametrize(
    ("cores", "request_ms", "model_ms", "workers", "threads"),
    [
        (2, 1.2, 0.3, 2, 1),  # the reference machine: Python is the bottleneck
        (16, 1.2, 0.3, 13, 1),  # a 16-core host: most cores run Python, one thread of model each
        # a heavy model: few processes, many model threads each (2 x 7 would leave the model short of the
        # limit: 14 threads' worth against the 14.5 cores it needs)
        (16, 0.1, 1.0, 3, 5),
        (1, 1.2, 0.3, 1, 1),
        (8, 0.5, 0.0, 8, 1),  # a remote model: only Python here
        # this machine today (the 2026-12-03 reference run): still 2, though one process's Python alone would
        # keep up, since its one model thread would not ...
        (2, 0.22, 0.15, 2, 1),
        (2, 0.22, 0.36, 2, 1),  # ... nor when the model reads slower, on a busy start
        (16, 0.22, 0.14, 10, 1),
    ],
)
def test_workers_and_threads_follow_the_balance(cores, request_ms, model_ms, workers, threads):
    balance = choose(cores, request_ms, model_ms)
    assert (balance.workers, balance.threads) == (workers, threads)
    limit = cores / (request_ms + model_ms)
    # enough processes for the lock-bound work and enough model threads to keep up with the machine's limit
    assert balance.workers / request_ms >= limit - 1e-9
    assert model_ms == 0 or balance.workers * balance.threads / model_ms >= limit - 1e-9
    # ... and no more threads than cores, unless a single thread each already exceeds them
    assert balance.workers * balance.threads <= max(cores, balance.workers)


@pytest.mark.parametrize(("cores", "request_ms", "model_ms"), [(0, 1.0, 1.0), (2, 0.0, 1.0), (2, 1.0, -1.0)])
def test_impossible_measurements_are_refused(cores, request_ms, model_ms):
    with pytest.raises(ValueError, match="need cores >= 1"):
        choose(cores, request_ms, model_ms)


def test_the_model_is_timed_on_the_served_graph():
    settings = make_settings(intra_op_threads=1)
    spec = load_spec(settings)
    runtime = Runtime(spec, settings)
    try:
        per_image_at_8 = model_ms_per_image(runtime, spec.latent_dim, 8)
    finally:
        runtime.close()
    assert 0 < per_image_at_8 < 1000


def test_auto_is_accepted_as_a_word_or_zero():
    assert make_settings(workers="auto").workers == make_settings(workers=0).workers == 0


@pytest.mark.parametrize(("request_cpu_ms", "expected"), [(1e-6, 1), (1000.0, available_cores())])
def test_gan_serve_chooses_and_says_what_it_runs(request_cpu_ms, expected):
    """A tiny Python cost per answer: one process is enough; a huge one: a process per core."""
    port = free_port()
    process = start_server(
        port,
        capture_stderr=True,
        workers="auto",
        request_cpu_ms=request_cpu_ms,
        log_level="info",
        drain_s=0,
        max_batch=8,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_ready(client.get, READY_TIMEOUT_S)
            metrics = client.get("/metrics").text
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    chosen = re.search(r"workers=auto: (\d+) worker\(s\) x (\d+) ONNX Runtime thread", stderr)
    assert chosen, stderr
    workers, threads = map(int, chosen.groups())
    assert workers == expected
    # what runs is what was chosen: every live worker's session reports that thread count
    assert re.search(rf'gan_model_info\{{[^}}]*intra_op_threads="{threads}"', metrics), metrics


def _resolve_recording(monkeypatch, settings, cores: int):
    """service.cli.resolve_workers with the timing and the sessions it opens recorded."""
    import service.cli as cli

    timed: list[int] = []
    opened: list[object] = []
    real_open, real_time = cli.open_runtime, cli.model_ms_per_image

    def record_open(spec, chosen):
        opened.append(real_open(spec, chosen))
        return opened[-1]

    def record_time(runtime, latent_dim, batch):
        timed.append(batch)
        return real_time(runtime, latent_dim, batch)

    monkeypatch.setattr(cli, "open_runtime", record_open)
    monkeypatch.setattr(cli, "model_ms_per_image", record_time)
    monkeypatch.setattr(cli, "available_cores", lambda: cores)
    for name in ("GAN_WORKERS", "GAN_INTRA_OP_THREADS"):  # resolve_workers sets them: undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("GAN_MODEL_DIR", str(settings.model_dir))
    return cli.resolve_workers(settings), timed, opened


def test_auto_times_an_autoregressive_model_at_its_hinted_batch(monkeypatch, request):
    """The pixelcnn manifest hints max_batch 16 (its sampling loop is slow at 64): auto times that batch,
    as the app will run it, not GAN_MAX_BATCH."""
    pytest.importorskip("torch")  # the tiny pixelcnn is built with it
    _, model_dir = request.getfixturevalue("pixelcnn_dirs")
    hint = load_spec(make_settings(model_dir=model_dir)).manifest.max_batch_hint
    assert hint is not None and hint < 64
    (chosen, probe), timed, _ = _resolve_recording(
        monkeypatch, make_settings(model_dir=model_dir, workers=0), 2
    )
    if probe is not None:
        probe.close()
    assert timed == [hint]
    assert with_model_hints(chosen, hint).max_batch == hint  # the app still applies the hint after auto


def test_auto_on_one_core_serves_the_session_it_timed(monkeypatch):
    (chosen, probe), _, opened = _resolve_recording(monkeypatch, make_settings(workers=0), cores=1)
    try:
        assert (chosen.workers, chosen.intra_op_threads) == (1, 1)
        assert opened == [probe]  # opened once, handed on to be served
    finally:
        probe.close()


def test_auto_closes_its_timing_session_when_the_workers_open_their_own(monkeypatch):
    (chosen, probe), _, opened = _resolve_recording(
        monkeypatch, make_settings(workers=0, request_cpu_ms=1000.0), cores=2
    )
    assert chosen.workers == 2 and probe is None and len(opened) == 1

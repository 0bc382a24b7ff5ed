"""Helpers for the service tests: the real model directory served by the real app, in process (TestClient),
in a thread (uvicorn, for injected runtimes) or as a `gan-serve` subprocess (bursts, signals, clients)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import uvicorn

from service.config import Settings
from service.main import create_app
from service.model_repo import ModelSpec
from service.runtime import GraphKind, Runtime

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "models" / "mnist-cdcgan"
READY_TIMEOUT_S = 60.0
# the live server runs interactive batches on its event loop, as the shipped settings do on 2 cores
# (two workers, one core each); the in-process tests (make_settings) run them on the inference thread
LIVE_SETTINGS = {
    "max_bulk_n": 4096,
    "max_steps": 16,
    "max_queue_images": 1024,
    "max_batch": 64,
    "interactive_batches": "loop",
}


def build_unconditional_model(directory: Path) -> Path:
    """A tiny unconditional model directory (random DCGAN weights, exported by ``export.build``) in
    ``directory/model``. Torch, train and export are imported here only: the service never needs them."""
    import torch

    from contracts.run_dir import write_config
    from export.build import ExportOptions, export_run
    from train.checkpoint import save_generator
    from train.models import Architecture, build_generator

    arch = Architecture(latent_dim=8, width=4, embed_dim=4)
    torch.manual_seed(0)
    run = directory / "run"
    run.mkdir(parents=True)
    config = {"model": "dcgan", "conditional": False, "latent_dim": 8, "num_classes": 10,
              "image_shape": [28, 28, 1], "architecture": arch.kwargs()}  # fmt: skip
    write_config(run, config)
    save_generator(run, build_generator("dcgan", arch))
    export_run(run, directory / "model", ExportOptions(name="uncond", sample_seeds=(0, 1, 2)))
    return directory / "model"


def make_settings(**overrides) -> Settings:
    """Settings for tests: the real model, quiet logs, no .env file, no SIGTERM drain; interactive batches on
    the inference thread whatever the machine's cores (tests hold that thread at a gate; the live server runs
    them on its event loop, as two workers on two cores do)."""
    values = {
        "model_dir": MODEL_DIR,
        "access_log": False,
        "drain_s": 0,
        "max_wait_ms": 2.0,
        "interactive_batches": "thread",
        **overrides,
    }
    return Settings(_env_file=None, **values)


def wait_ready(get: Callable[[str], httpx.Response], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if get("/readyz").status_code == 200:
                return
        time.sleep(0.02)
    raise TimeoutError("service not ready")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_in_process(settings: Settings, runtime_factory=Runtime, headers=None) -> Iterator:
    from fastapi.testclient import TestClient  # lazily: its import warns before pytest's filters are set

    with TestClient(create_app(settings, runtime_factory)) as client:
        wait_ready(lambda path: client.get(path, headers=headers))
        yield client


class GatedRuntime(Runtime):
    """The real runtime, but every inference call after warm-up waits for ``gate`` and is recorded."""

    def __init__(self, spec: ModelSpec, settings: Settings):
        super().__init__(spec, settings)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # an inference call is waiting at (or went through) the gate
        self.calls: list[tuple[GraphKind, int, object]] = []
        self.warm = False

    def run(self, kind, z, condition):
        if self.warm:
            self.entered.set()
            if not self.gate.wait(timeout=60):
                raise TimeoutError("test gate never opened")
            self.calls.append((kind, len(z), condition.copy()))
        return super().run(kind, z, condition)


@contextlib.contextmanager
def serve_in_thread(
    settings: Settings,
    runtime_factory=Runtime,
    config_class: type[uvicorn.Config] = uvicorn.Config,
    **options,
) -> Iterator[str]:
    """A real uvicorn server on a free port, in a thread of this process; yields its base URL.
    ``config_class`` and ``options`` go to uvicorn (gan-serve's ``ServerConfig``, ``server_options``)."""
    port = free_port()
    config = config_class(
        create_app(settings, runtime_factory),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(lambda path: httpx.get(url + path))
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def start_server(port: int, capture_stderr: bool = False, **env: object) -> subprocess.Popen:
    """`gan-serve` (as ``python -m service.cli``) in a subprocess, settings through ``GAN_*``; one worker
    unless ``workers`` is given (what these tests count, such as connections per worker, is one process's;
    the default, ``auto``, is tested in test_service_capacity). ``capture_stderr``: stderr piped, as text."""
    environ = {
        **os.environ,
        "GAN_MODEL_DIR": str(MODEL_DIR),
        "GAN_ACCESS_LOG": "false",
        "GAN_LOG_LEVEL": "warning",
        "GAN_WORKERS": "1",
        **{f"GAN_{k.upper()}": str(v) for k, v in env.items()},
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "--port", str(port)],
        env=environ,
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=capture_stderr,
    )


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_server(port: int | None = None, **env: object) -> Iterator[tuple[str, subprocess.Popen]]:
    """``start_server`` until ready, stopped on exit; yields its base URL and process."""
    port = port or free_port()
    process = start_server(port, **env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(lambda path: httpx.get(url + path))
        yield url, process
    finally:
        stop_server(process)

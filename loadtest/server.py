"""Servers under test, started as subprocesses on a free local port: the service (``gan-serve``) or the
framework-ceiling app (``loadtest.trivial_app``). The caller gets the base URL and the process, whose RSS
and CPU time the reports read."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
# the interpreter of a virtual environment with BentoML (it does not install against this project's pins)
BENTOML_PYTHON_ENV = "GAN_BENCH_BENTOML_PYTHON"
READY_TIMEOUT_S = 120.0  # model load + warm-up of every batch size on a busy 2-core machine
STOP_TIMEOUT_S = 30.0
POLL_S = 0.2
SAY_WAITING_AFTER_S = 2.0  # an external server not ready by then: say what is being waited for, and why


class ServerError(RuntimeError):
    """The server did not come up (the message carries the tail of its log)."""


@dataclass
class Server:
    url: str
    process: subprocess.Popen | None  # None: an external server given by URL
    log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def rss_bytes(self) -> int | None:
        """Resident memory of the server and its children (uvicorn workers), or None when not ours."""
        if self.process is None:
            return None
        try:
            root = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.NoSuchProcess:
            return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_ready(
    url: str, path: str, process: subprocess.Popen | None, timeout_s: float, log: Path | None
) -> None:
    started = time.monotonic()
    deadline, told = started + timeout_s, process is not None  # a server started here has its log
    last = "no answer"
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ServerError(f"server exited with code {process.returncode}:\n{_tail(log)}")
            try:
                status = client.get(path).status_code
                if status == 200:
                    return
                last = f"HTTP {status}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if not told and time.monotonic() - started > SAY_WAITING_AFTER_S:
                print(f"waiting up to {timeout_s:g} s for {url}{path} ({last})", file=sys.stderr, flush=True)
                told = True
            time.sleep(POLL_S)
    raise ServerError(f"{url}{path} not ready within {timeout_s:g} s ({last}):\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def require_free(url: str) -> None:
    """Raises ``ServerError`` when something already listens on ``url``'s port: a server started there would
    fail to bind, and the one already there would answer for it."""
    parsed = httpx.URL(url)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((parsed.host, parsed.port or 80))
        except OSError as exc:
            raise ServerError(
                f"cannot start a server on {url}: {exc.strerror} (is another server there?)"
            ) from None


@contextmanager
def _spawn(cmd: list[str], env: Mapping[str, str], url: str, ready_path: str, log: Path) -> Iterator[Server]:
    require_free(url)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, env=dict(env), stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, ready_path, process, READY_TIMEOUT_S, log)
        yield Server(url, process, log)
    finally:
        _stop(process)


@contextmanager
def service(
    settings: Mapping[str, str | int | float], log: Path, port: int | None = None
) -> Iterator[Server]:
    """``gan-serve`` with ``GAN_*`` overrides (e.g. ``{"max_batch": 1}``) on ``port`` (None: a free one);
    waits for /readyz.

    The SIGTERM drain is off (``GAN_DRAIN_S=0``) and so are API keys (``GAN_API_KEYS``), unless given: it
    is a private server on a loopback port, stopped at the end."""
    port = port or free_port()
    env = {
        **os.environ,
        "GAN_HOST": "127.0.0.1",
        "GAN_PORT": str(port),
        "GAN_DRAIN_S": "0",
        "GAN_API_KEYS": "",
    }
    env.update({f"GAN_{key.upper()}": str(value) for key, value in settings.items()})
    cmd = [sys.executable, "-m", "service.cli"]
    with _spawn(cmd, env, f"http://127.0.0.1:{port}", "/readyz", log) as server:
        yield server


@contextmanager
def trivial_app(
    log: Path, image_shape: tuple[int, int, int], workers: int = 1, port: int | None = None
) -> Iterator[Server]:
    """The framework ceiling: ``loadtest.trivial_app`` (answering PNGs of ``image_shape``) under the service's
    uvicorn setup, on ``port`` (None: a free one)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "loadtest.trivial_app", "--port", str(port), "--workers", str(workers)]
    env = {**os.environ, "TRIVIAL_IMAGE_SHAPE": ",".join(str(v) for v in image_shape)}
    with _spawn(cmd, env, f"http://127.0.0.1:{port}", "/healthz", log) as server:
        yield server


@contextmanager
def external(url: str, ready_path: str = "/readyz") -> Iterator[Server]:
    wait_ready(url, ready_path, None, READY_TIMEOUT_S, None)
    yield Server(url.rstrip("/"), None)


@contextmanager
def _peer(
    module: str,
    ready_path: str,
    log: Path,
    model_dir: Path,
    port: int | None,
    python: str = sys.executable,
    env: Mapping[str, str] = os.environ,
) -> Iterator[Server]:
    """A peer (``python -m module``, ``loadtest.peer_model``'s flags) on ``port`` (None: a free one)."""
    port = port or free_port()
    cmd = [python, "-m", module, "--model-dir", str(model_dir), "--port", str(port)]
    with _spawn(cmd, env, f"http://127.0.0.1:{port}", ready_path, log) as server:
        yield server


def bentoml_python() -> str | None:
    """``GAN_BENCH_BENTOML_PYTHON`` when it names an interpreter that imports bentoml, else None."""
    python = os.environ.get(BENTOML_PYTHON_ENV)
    if not python:
        return None
    try:
        found = subprocess.run([python, "-c", "import bentoml"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return python if found.returncode == 0 else None


@contextmanager
def naive(log: Path, model_dir: Path, port: int | None = None) -> Iterator[Server]:
    """The naive peer (``loadtest.naive_server``: a sync FastAPI route, one batch-1 ORT call per request)."""
    with _peer("loadtest.naive_server", "/healthz", log, model_dir, port) as server:
        yield server


@contextmanager
def litserve_peer(log: Path, model_dir: Path, port: int | None = None) -> Iterator[Server]:
    """The LitServe peer (``loadtest.litserve_peer``: LitServe's own batching, up to 64 per ORT call); waits
    for LitServe's /health. Needs the ``peers`` extra (litserve)."""
    with _peer("loadtest.litserve_peer", "/health", log, model_dir, port) as server:
        yield server


@contextmanager
def bentoml_peer(log: Path, model_dir: Path, port: int | None = None) -> Iterator[Server]:
    """The BentoML peer (``loadtest.bentoml_peer``: adaptive batching, up to 64 per ORT call), run by the
    interpreter ``GAN_BENCH_BENTOML_PYTHON`` names, with this repository on its path; waits for /readyz."""
    python = bentoml_python()
    if python is None:
        raise ServerError(
            f"{BENTOML_PYTHON_ENV} names no interpreter with bentoml (loadtest/bentoml_peer.py)"
        )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with _peer("loadtest.bentoml_peer", "/readyz", log, model_dir, port, python, env) as server:
        yield server


@contextmanager
def ray_peer(log: Path, model_dir: Path, port: int | None = None) -> Iterator[Server]:
    """The Ray Serve peer (``loadtest.ray_peer``: ``@serve.batch``, up to 64 per ORT call, in a local Ray
    cluster of one CPU); waits for its deployment's /healthz. Needs the ``peers`` extra (ray[serve])."""
    with _peer("loadtest.ray_peer", "/healthz", log, model_dir, port) as server:
        yield server

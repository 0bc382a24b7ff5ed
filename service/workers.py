"""Several uvicorn workers: one listening socket each, a health check their event loops answer, and one
``/metrics`` over all of them.

**Sockets.** uvicorn's workers share one listening socket, and whichever worker's event loop wakes first
accepts every connection waiting: a burst of new keep-alive connections (a load generator's or a client
pool's start) lands on one worker. gan-bench's 64 clients were split 0/64 or 1/63 between two workers as often
as 31/33, and the lopsided runs answered ~25 % fewer requests (reports/bench/NOTES.md). With
``GAN_REUSE_PORT`` (the default where the system has ``SO_REUSEPORT``), ``gan-serve`` binds one socket per
worker on the same port and the kernel spreads new connections over them by a hash of their addresses. The
supervisor holds every socket, so a worker that is replaced (crashed, hung, SIGHUP) finds its connections
still queued in its socket (but while it restarts, the ~1/n of new connections the kernel gives its socket
wait for it instead of going to another worker); SIGTTIN binds one more, SIGTTOU closes the retired worker's
(connections queued in it when it stops are reset). Before binding, the port is taken once without
``SO_REUSEPORT``, so that a port another server listens on is refused rather than shared with it.

**Health.** uvicorn's supervisor pings each worker every half second and replaces one that does not answer
within ``GAN_WORKER_HEALTHCHECK_S``. uvicorn answers from a thread of its own, so a worker whose event loop
was stuck (a batch on the loop that never returns, a blocking call in a handler) kept answering while the
connections on its socket waited. Here a started worker's answer waits for a turn of its event loop.

**Metrics.** prometheus-client's multiprocess mode.

Each worker writes its metric values to files in one directory (``PROMETHEUS_MULTIPROC_DIR``) and whichever
worker answers a scrape sums every worker's files. ``gan-serve`` makes that directory fresh and private for
each run (under ``TMPDIR``), before the first worker starts, and removes it when the last one has stopped.
The supervisor below is uvicorn's, plus the library's ``mark_process_dead`` for every worker that leaves
(crashed, killed as hung, or retired by SIGHUP/SIGTTOU), so the per-worker gauges summed over live workers
(queue depth, bulk streams, readiness) drop a dead worker's last values; its counters stay counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import multiprocess
from uvicorn.config import Config
from uvicorn.main import STARTUP_FAILURE  # 3; also in uvicorn.config from later versions
from uvicorn.server import Server
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from service.metrics import MULTIPROC_DIR_ENV

log = logging.getLogger(__name__)


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """A fresh private directory in ``PROMETHEUS_MULTIPROC_DIR`` for the workers started inside the block
    (they inherit the environment); removed, with the variable, on the way out."""
    inherited = os.environ.get(MULTIPROC_DIR_ENV)
    if inherited:
        log.warning("%s=%s is replaced by a fresh directory for this run", MULTIPROC_DIR_ENV, inherited)
    with tempfile.TemporaryDirectory(prefix="gan-serve-metrics-") as path:  # mode 0700
        os.environ[MULTIPROC_DIR_ENV] = path
        try:
            yield path
        finally:
            if inherited:
                os.environ[MULTIPROC_DIR_ENV] = inherited
            else:
                os.environ.pop(MULTIPROC_DIR_ENV, None)


REUSE_PORT_AVAILABLE = hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn's Config.bind_socket


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def free_port_on(host: str, port: int) -> int:
    """``port`` (a free one when 0) after binding it once without ``SO_REUSEPORT``: raises ``OSError`` when
    another socket listens on it, even one with ``SO_REUSEPORT`` (which would otherwise share the port)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return probe.getsockname()[1]


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to ``host``:``port`` with ``SO_REUSEPORT`` (a free port when 0), one per
    worker; raises ``OSError`` when the port is taken."""
    if count < 1:
        raise ValueError(f"need at least one socket, got {count}")
    port = free_port_on(host, port)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_reuse_port_socket(host, port))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_sockets(config: Config, workers: int, reuse_port: bool) -> list[socket.socket]:
    """Worker ``i``'s listening socket at index ``i``: its own (``listening_sockets``) or, without
    ``reuse_port``, the one socket they share (uvicorn's own binding). Exits as uvicorn does when the port
    cannot be bound."""
    if not reuse_port:
        return [config.bind_socket()] * workers
    try:
        sockets = listening_sockets(config.host, config.port, workers)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        raise SystemExit(STARTUP_FAILURE) from exc
    host = f"[{config.host}]" if ":" in config.host else config.host
    port = sockets[0].getsockname()[1]
    log.info(
        "gan-serve listening on http://%s:%d: %d workers, one SO_REUSEPORT socket each", host, port, workers
    )
    return sockets


class _LoopServer(Server):
    """uvicorn's server, keeping the event loop it serves on."""

    loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)


def _loop_turns(loop: asyncio.AbstractEventLoop) -> None:
    """Returns once ``loop`` has run a callback: never while it is stuck."""
    turned = threading.Event()
    try:
        loop.call_soon_threadsafe(turned.set)
    except RuntimeError:  # closed: the worker is on its way out, and says so by exiting
        return
    turned.wait()


class LoopCheckedProcess(Process):
    """uvicorn's worker process, whose health check a started server answers only after a turn of its event
    loop: the supervisor's wait (``GAN_WORKER_HEALTHCHECK_S``) then ends in the worker's replacement."""

    @property
    def server(self) -> _LoopServer:
        if not isinstance(self._server, _LoopServer):
            self._server = _LoopServer(config=self.config)
        return self._server

    def pong(self) -> None:
        self.child_conn.recv()
        server = self.server
        if server.started and server.loop is not None:
            _loop_turns(server.loop)
        self.child_conn.send(server.started)


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, with worker ``i`` on ``sockets[i]`` (see ``bind_sockets``) whenever it
    is started or replaced, and replaced when its event loop is stuck (``LoopCheckedProcess``); a worker
    that leaves the pool is marked dead in the metrics directory. uvicorn
    stops every worker when one fails to start; ``failed_to_start`` then holds its pid, so that
    ``gan-serve`` can exit non-zero."""

    def __init__(self, config: Config, sockets: Sequence[socket.socket], *, metrics_dir: str):
        if len(sockets) != config.workers:
            raise ValueError(f"one socket per worker: {len(sockets)} for {config.workers} workers")
        super().__init__(config, list(sockets))
        self.own_sockets = len({id(sock) for sock in sockets}) == len(sockets)  # else one, shared
        self.metrics_dir = metrics_dir
        self.failed_to_start: int | None = None

    def _start(self, index: int) -> Process:
        process = LoopCheckedProcess(self.config, [self.sockets[index]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start(index) for index in range(self.processes_num)]

    def restart_all(self) -> None:
        """uvicorn's: each worker replaced by a new one on its socket, ready before the old one retires."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start(index)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("new worker [%s] not ready in time; keeping [%s]", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[index] = new

    def terminate_all(self) -> None:
        """uvicorn's, after closing the supervisor's copies of the listening sockets: once a worker stops
        listening (at the end of its drain) its socket is closed, so a new connection is refused at once
        (a client or balancer tries elsewhere) rather than queued in a socket that no worker accepts from
        any more, unanswered until the last worker has finished and then reset."""
        for sock in {id(sock): sock for sock in self.sockets}.values():
            sock.close()
        super().terminate_all()

    def keep_subprocess_alive(self) -> None:  # replaces dead and hung workers
        self._marking_departed(self._replace_departed)
        if self.failed_to_start is None and self.should_exit.is_set():
            failed = [p.pid for p in self.processes if p.exitcode == STARTUP_FAILURE]
            self.failed_to_start = failed[0] if failed else None

    def _replace_departed(self) -> None:
        """uvicorn's ``keep_subprocess_alive``, the replacement on the departed worker's socket."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: killed; dead: a no-op
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # the app or the socket is broken: every restart would be
                log.error("worker [%s] failed to start, stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("worker [%s] died", process.pid)
            self.processes[index] = self._start(index)

    def handle_signals(self) -> None:  # SIGHUP replaces every worker, SIGTTOU retires one
        self._marking_departed(super().handle_signals)

    def handle_ttin(self) -> None:
        """One more worker, on a socket of its own when the others have theirs."""
        log.info("SIGTTIN: one more worker")
        if self.own_sockets:
            try:
                self.sockets.append(_reuse_port_socket(self.config.host, self.sockets[0].getsockname()[1]))
            except OSError as exc:
                log.error("SIGTTIN: no socket for another worker: %s", exc)
                return
        else:
            self.sockets.append(self.sockets[0])
        self.processes_num += 1
        self.processes.append(self._start(len(self.processes)))

    def handle_ttou(self) -> None:
        """One worker fewer (uvicorn's), its own socket closed here first: from then on only the retiring
        worker's copy keeps it open, so the kernel stops sending it new connections once that worker stops
        listening, and only what is queued at that moment is reset (kept open here until the worker has
        gone, it would take ~1/n of new connections throughout the worker's drain, all of them reset)."""
        log.info("SIGTTOU: one worker fewer")
        if self.processes_num <= 1:
            log.info("SIGTTOU: one worker left, kept")
            return
        self.processes_num -= 1
        retired = self.sockets.pop()
        if self.own_sockets:
            retired.close()
        process = self.processes.pop()
        process.terminate()
        process.join()

    def _marking_departed(self, step: Callable[[], None]) -> None:
        before = {process.pid for process in self.processes}
        try:
            step()
        finally:
            for pid in before - {process.pid for process in self.processes}:
                if pid is not None:
                    multiprocess.mark_process_dead(pid, self.metrics_dir)

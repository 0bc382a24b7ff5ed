"""A fresh client's view of a server under a burst: in a process of its own (so the burst client's event loop,
busy with thousands of connections, does not delay it), one request at a time on a new connection every
``interval_s``, timed from ``connect()`` to the answer's last byte. This is what a new caller sees while the
server is overloaded: how soon a refusal (or an answer) reaches it."""

from __future__ import annotations

import multiprocessing
import socket
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from urllib.parse import urlsplit

FAILED = "failed"
TIMEOUT_S = 120.0

Results = dict[str, list[float]]  # status -> seconds from connect to the last byte


def one_request(host: str, port: int, target: str) -> tuple[str, float]:
    """``POST target`` on a new connection (``Connection: close``): its status, seconds to the last byte."""
    started = time.perf_counter()
    request = f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    answer = bytearray()
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
            sock.sendall(request.encode("ascii"))
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        if not answer.startswith(b"HTTP/1."):
            return FAILED, time.perf_counter() - started
    status = answer[9:12].decode("ascii", "replace") if answer.startswith(b"HTTP/1.") else FAILED
    return status, time.perf_counter() - started


def probe(url: str, target: str, interval_s: float, start: Event, stop: Event, results: Queue) -> None:
    """The probe process: waits for ``start``, then one request every ``interval_s`` until ``stop``; puts
    its ``Results`` on the ``results`` queue."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    found: Results = {}
    start.wait()
    while not stop.is_set():
        began = time.perf_counter()
        status, seconds = one_request(host, port, target)
        found.setdefault(status, []).append(seconds)
        time.sleep(max(0.0, interval_s - (time.perf_counter() - began)))
    results.put(found)


class Probe:
    """The probe process, started on entering (it waits for ``begin``), stopped on exit with its results in
    ``results``."""

    def __init__(self, url: str, target: str, interval_s: float):
        context = multiprocessing.get_context("spawn")  # nothing of this process's event loop or threads
        self._start, self._stop, self._queue = context.Event(), context.Event(), context.Queue()
        self._process = context.Process(
            target=probe,
            args=(url, target, interval_s, self._start, self._stop, self._queue),
            name="burst-probe",
            daemon=True,
        )
        self.results: Results = {}

    def __enter__(self) -> Probe:
        self._process.start()
        return self

    def begin(self) -> None:
        self._start.set()

    def __exit__(self, *exc_info: object) -> None:
        self._start.set()
        self._stop.set()
        try:
            self.results = self._queue.get(timeout=TIMEOUT_S + 10)
        finally:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()

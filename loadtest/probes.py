"""Where the CPU went during a measuring window: the load generator itself, the server (its event-loop thread
apart from its other threads: ONNX Runtime's pool and the encoding thread pool), and the whole machine, so
the share taken by other processes on a shared machine is visible rather than hidden in the figures."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class CpuReading:
    wall: float
    client: float  # this process's CPU seconds
    server: float  # the server process and its children
    server_main: float  # every server process's main thread: uvicorn's event loop in each worker
    machine_busy: float  # all CPUs, everything but idle and iowait


def _busy(times: Any) -> float:  # psutil's scputimes named tuple
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0)


def _seconds(process: psutil.Process) -> tuple[float, float]:
    """The process's CPU seconds, and its main thread's: with GAN_WORKERS > 1 the event loops run in the
    workers (children), not in the supervisor. Raises ``psutil.NoSuchProcess`` once it has exited."""
    times = process.cpu_times()
    main = [t for t in process.threads() if t.id == process.pid]
    return times.user + times.system, sum(t.user_time + t.system_time for t in main)


class CpuMeter:
    def __init__(self, server_pid: int | None = None):
        self._server = psutil.Process(server_pid) if server_pid else None

    def read(self) -> CpuReading:
        server = server_main = 0.0
        if self._server is not None:
            try:
                processes = [self._server, *self._server.children(recursive=True)]
            except psutil.NoSuchProcess:
                processes = []
            for process in processes:
                try:
                    total, main = _seconds(process)
                except psutil.NoSuchProcess:  # exited meanwhile: counted in neither figure
                    continue
                server += total
                server_main += main
        own = psutil.Process().cpu_times()
        return CpuReading(
            wall=time.monotonic(),
            client=own.user + own.system,
            server=server,
            server_main=server_main,
            machine_busy=_busy(psutil.cpu_times()),
        )


def cpu_usage(start: CpuReading, end: CpuReading) -> dict[str, float]:
    """Cores in use on average over the window (1.0 = one core busy all the time)."""
    wall = max(end.wall - start.wall, 1e-9)
    client = (end.client - start.client) / wall
    server = (end.server - start.server) / wall
    machine = (end.machine_busy - start.machine_busy) / wall
    return {
        "client_cores": client,
        "server_cores": server,
        "server_event_loop_cores": (end.server_main - start.server_main) / wall,
        "server_other_threads_cores": server - (end.server_main - start.server_main) / wall,
        "machine_busy_cores": machine,
        "other_processes_cores": max(machine - client - server, 0.0),
        "cpu_count": float(os.cpu_count() or 0),
        "load_average_1m": os.getloadavg()[0],
    }

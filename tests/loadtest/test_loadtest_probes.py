"""The CPU meter counts the event loop where it runs: with several workers that is each child's main thread,
not the idle supervisor's."""

from __future__ import annotations

import subprocess
import sys

import psutil

from loadtest.probes import CpuMeter, cpu_usage

SPIN_SECONDS = 0.5
TICK_SLACK_S = 0.05  # /proc counts user and system time apart, each in whole 10 ms ticks
WORKER = f"""
import sys, time
print("ready", flush=True)
sys.stdin.readline()
start = time.thread_time()
while time.thread_time() - start < {SPIN_SECONDS}:
    pass
print("spun", flush=True)
time.sleep(60)
"""
SUPERVISOR = f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", {WORKER!r}]).wait()
"""


def test_event_loop_share_counts_the_workers_main_threads() -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert supervisor.stdin is not None and supervisor.stdout is not None
    try:
        assert supervisor.stdout.readline().strip() == "ready"
        meter = CpuMeter(supervisor.pid)
        start = meter.read()
        supervisor.stdin.write("go\n")
        supervisor.stdin.flush()
        assert supervisor.stdout.readline().strip() == "spun"
        end = meter.read()
        main_seconds = end.server_main - start.server_main
        assert main_seconds >= SPIN_SECONDS - TICK_SLACK_S
        assert end.server - start.server >= main_seconds - TICK_SLACK_S
        assert cpu_usage(start, end)["server_event_loop_cores"] > 0
    finally:
        for process in psutil.Process(supervisor.pid).children(recursive=True):
            process.kill()
        supervisor.kill()
        supervisor.wait()

"""Several uvicorn workers behind one ``/metrics``: prometheus-client's multiprocess mode.

Each worker writes its metric values to files in one directory (``PROMETHEUS_MULTIPROC_DIR``) and whichever
worker answers a scrape sums every worker's files. ``gan-serve`` makes that directory fresh and private for
each run (under ``TMPDIR``), before the first worker starts, and removes it when the last one has stopped.
The supervisor below is uvicorn's, plus the library's ``mark_process_dead`` for every worker that leaves
(crashed, killed as hung, or retired by SIGHUP/SIGTTOU), so the per-worker gauges summed over live workers
(queue depth, bulk streams, readiness) drop a dead worker's last values; its counters stay counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator

from prometheus_client import multiprocess
from uvicorn.main import STARTUP_FAILURE  # 3; also in uvicorn.config from later versions
from uvicorn.supervisors import Multiprocess

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


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor; a worker that leaves the pool is marked dead in the metrics directory.
    uvicorn stops every worker when one fails to start; ``failed_to_start`` then holds its pid, so that
    ``gan-serve`` can exit non-zero."""

    def __init__(self, *args, metrics_dir: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.metrics_dir = metrics_dir
        self.failed_to_start: int | None = None

    def keep_subprocess_alive(self) -> None:  # replaces dead and hung workers
        self._marking_departed(super().keep_subprocess_alive)
        if self.failed_to_start is None and self.should_exit.is_set():
            failed = [p.pid for p in self.processes if p.exitcode == STARTUP_FAILURE]
            self.failed_to_start = failed[0] if failed else None

    def handle_signals(self) -> None:  # SIGHUP replaces every worker, SIGTTOU retires one
        self._marking_departed(super().handle_signals)

    def _marking_departed(self, step: Callable[[], None]) -> None:
        before = {process.pid for process in self.processes}
        try:
            step()
        finally:
            for pid in before - {process.pid for process in self.processes}:
                if pid is not None:
                    multiprocess.mark_process_dead(pid, self.metrics_dir)

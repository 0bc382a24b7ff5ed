"""Structured logs: one JSON object per line. Access lines carry their fields in ``extra={"fields": {...}}``;
request headers (where API keys travel) are never logged."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import threading
import time
import traceback

ACCESS_LOGGER = "service.access"
ACCESS_FLUSH_S = 0.1  # most time an access line waits in its handler's buffer
STDERR_FD = 2
REPORT_MAX_CHARS = 2000  # of a failed flush's traceback: its line stays one write under PIPE_BUF


class JsonFormatter(logging.Formatter):
    """Runs once per request (the access log), so it keeps its encoder and the formatted current second."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = json.JSONEncoder(default=str)
        self._second, self._second_text = -1, ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry = {
            "ts": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._encoder.encode(entry)


class BatchedLineHandler(logging.Handler):
    """Lines to a file descriptor in batches: the access log wrote one line per request, a write system call
    per answer on the event loop (12 % of single-image throughput at 64 clients, reports/bench/NOTES.md).

    Formatted lines gather in memory and go out in writes of whole lines of at most ``PIPE_BUF`` bytes (a
    write that size to a pipe is atomic, so the workers sharing stderr never interleave within a line): when
    the next line would not fit, every ``flush_s`` from a thread of its own, and at exit (``logging``
    flushes every handler then). A line waits at most ``flush_s``."""

    def __init__(self, fd: int = STDERR_FD, flush_s: float = ACCESS_FLUSH_S):
        super().__init__()
        self._fd = fd
        self._lines: list[bytes] = []
        self._size = 0
        self._stopping = threading.Event()  # not ``_closed``: logging.Handler.close sets that to True
        self.thread = threading.Thread(
            target=self._flush_every, args=(flush_s,), name="log-flush", daemon=True
        )
        self.thread.start()

    def emit(self, record: logging.LogRecord) -> None:  # under the handler's lock (Handler.handle)
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            if self._lines and self._size + len(line) > select.PIPE_BUF:
                self._write()
            self._lines.append(line)
            self._size += len(line)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:
            if self._lines:
                self._write()

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.flush()
        super().close()

    def _write(self) -> None:
        data = memoryview(b"".join(self._lines))
        self._lines, self._size = [], 0
        while data:
            data = data[os.write(self._fd, data) :]

    def _flush_every(self, seconds: float) -> None:
        while not self._stopping.wait(seconds):
            try:
                self.flush()
            except OSError:  # stderr gone: the lines are dropped, the service goes on
                pass
            except Exception as exc:  # no bare traceback on a JSON stream, no thread that stops flushing
                self._report(exc)

    def _report(self, exc: Exception) -> None:
        """One JSON line, written at once, saying that a timed flush failed and why."""
        error = "".join(traceback.format_exception(exc))[-REPORT_MAX_CHARS:]
        entry = {"level": "error", "logger": __name__, "msg": "timed access-log flush failed", "exc": error}
        with contextlib.suppress(OSError):
            os.write(self._fd, (json.dumps(entry) + "\n").encode("utf-8", "backslashreplace"))


def log_config(level: str) -> dict:
    """A ``logging.config.dictConfig`` for the service and uvicorn (uvicorn's own access log is replaced).
    Access lines are written in batches (``BatchedLineHandler``); every other line at once."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    access = {"()": BatchedLineHandler, "formatter": "json"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler, "access": access},
        "loggers": {
            ACCESS_LOGGER: {"handlers": ["access"], "level": level.upper(), "propagate": False},
            "service": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }

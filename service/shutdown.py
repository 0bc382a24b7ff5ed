"""Graceful SIGTERM: readiness turns 503 first, the server keeps serving for ``drain_s`` seconds (so a load
balancer stops sending), then the server's own handler stops accepting, in-flight requests finish and the
lifespan drains the batcher. A second SIGTERM stops at once. Installed from the lifespan so it works in every
uvicorn worker; a no-op outside the main thread (tests, embedded servers)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def install_sigterm_drain(state: object, drain_s: float) -> None:
    if drain_s <= 0 or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # no server handler to hand over to
        return
    loop = asyncio.get_running_loop()

    def stop(sig: int, frame: FrameType | None) -> None:
        previous(sig, frame)  # type: ignore[operator]

    def begin_drain(sig: int) -> None:
        log.info("SIGTERM: draining for %.1f s before shutdown", drain_s)
        loop.call_later(drain_s, stop, sig, None)

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if state.draining:  # type: ignore[attr-defined]
            stop(sig, frame)
            return
        state.draining = True  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(begin_drain, sig)

    signal.signal(signal.SIGTERM, on_sigterm)

"""uvicorn's HTTP server with bounded clients: a cap on header bytes and on the time to send them (uvicorn has
neither with httptools), a cap on open connections answered at accept, and each request told when its client
has gone (uvicorn's ``send`` silently does nothing then), so the app can count it as 499 and drop its queued
work. Used by ``gan-serve``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.config import Settings
from service.metrics import METRICS_STATE
from service.middleware import (
    CLIENT_EXTENSION,
    REQUEST_ID,
    ClientConnection,
    new_request_id,
    saturated_body,
)

log = logging.getLogger(__name__)
LIMIT_LOG_EVERY_S = 10.0  # at most one warning per this many seconds while connections are refused


class ServerConfig(uvicorn.Config):
    """uvicorn's Config carrying the header timeout to ``BoundedHttpProtocol`` (pickled to worker processes
    with the rest of the config)."""

    def __init__(self, *args, header_timeout_s: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s


class HeadersTooLarge(Exception):
    """Raised from a parser callback, which stops the parser where it is."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded clients, and each request told when its client goes away.

    uvicorn bounds neither the headers' size on httptools (``h11_max_incomplete_event_size`` is h11's only)
    nor the time a client takes to send them (``timeout_keep_alive`` runs only between requests). Here the
    request line and headers are counted twice: as the parser hands them over (exact, also when a whole
    request arrives in one read) and, while they are incomplete, as bytes received after each read (the
    parser keeps a partial line to itself); past ``h11_max_incomplete_event_size`` (``GAN_MAX_HEADER_BYTES``)
    by either count the client gets 431 and is disconnected (so the most buffered is that plus one read);
    a timer from the connection (or the first byte of a further
    request) to the end of its headers gives 408 and disconnects after ``header_timeout_s``
    (``GAN_HEADER_TIMEOUT_S``). Each request's scope carries a ``ClientConnection`` (see
    ``service.middleware``): told when the connection is lost before its answer is complete, and able to
    abort it."""

    def __init__(self, config: uvicorn.Config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.max_header_bytes = config.h11_max_incomplete_event_size or 65536
        self.header_timeout_s = getattr(config, "header_timeout_s", None)
        self.in_headers = True
        self.header_bytes = 0  # received while the head was incomplete
        self.parsed_header_bytes = 0  # handed over by the parser
        self.headers_too_large = False
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        cycles = [self.cycle, *(cycle for cycle, _ in self.pipeline)]
        super().connection_lost(exc)
        for cycle in cycles:
            client = getattr(cycle, "gan_client", None)
            if client is not None and not cycle.response_complete:
                client.lost()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_headers and self.parser is not None and not self.transport.is_closing():
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes:
                self._refuse_headers_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_headers, self.header_bytes, self.parsed_header_bytes = True, 0, 0
        self._start_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + len(b": \r\n"))
        super().on_header(name, value)

    def _count_parsed(self, size: int) -> None:
        self.parsed_header_bytes += size
        if self.parsed_header_bytes > self.max_header_bytes:
            self.headers_too_large = True
            raise HeadersTooLarge  # stops the parser; uvicorn then answers 400, see send_400_response

    def send_400_response(self, msg: str) -> None:
        if self.headers_too_large:
            self._refuse_headers_too_large()
        else:
            super().send_400_response(msg)

    def _refuse_headers_too_large(self) -> None:
        self._refuse(431, "Request Header Fields Too Large", "request headers too large")

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self._stop_header_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # a request started (not an upgrade)
            client = ClientConnection(self.transport.abort)
            cycle.gan_client = client  # type: ignore[attr-defined]
            self.scope["extensions"] = {CLIENT_EXTENSION: client}  # type: ignore[typeddict-unknown-key]

    def _start_header_timer(self) -> None:
        if self.header_timeout_s and self.header_timer is None:
            self.header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.in_headers and not self.transport.is_closing():
            self._refuse(408, "Request Timeout", "request headers not received in time")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer ``status`` and close, or only close while an earlier request's answer is still going."""
        self._stop_header_timer()
        self.in_headers = False
        if self.cycle is None or self.cycle.response_complete:
            body = message.encode("ascii")
            self.transport.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode("ascii")
                + body
            )
            self.transport.close()
        else:
            self.transport.abort()


class AtConnectionLimit(asyncio.Protocol):
    """A connection over ``GAN_MAX_CONNECTIONS``: answered 503 with Retry-After the moment it is accepted, its
    request never read or parsed (a refusal costs one write, not a request's way through the server and the
    app, so under a burst refusals reach their clients at once while the admitted work goes on). The answer
    is followed by a half-close, and the connection closed when the client closes its side (or after
    ``linger_s``): closing at once with the request unread would reset the connection and could destroy the
    answer before the client read it."""

    def __init__(self, answer: bytes, linger_s: float):
        self.answer = answer
        self.linger_s = linger_s
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is one but for its class
        self.transport = transport
        transport.write(self.answer)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(self.linger_s, transport.close)

    def data_received(self, data: bytes) -> None:  # the request, discarded unread
        pass

    def eof_received(self) -> bool:
        if self.transport is not None:
            self.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


def at_limit_answer(max_connections: int, retry_after_s: int) -> bytes:
    """The 503 for a connection over the limit, but for its request id (``%s``, one per refusal)."""
    body = saturated_body(
        f"it holds its most open connections ({max_connections}, GAN_MAX_CONNECTIONS); "
        f"retry after {retry_after_s} s"
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"retry-after: {retry_after_s}\r\n{REQUEST_ID.lower()}: %s\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ConnectionLimit:
    """uvicorn's protocol factory (``Config(http=...)``) with a cap on open connections: below
    ``max_connections`` each connection gets a ``BoundedHttpProtocol``, beyond it an ``AtConnectionLimit``
    (counted in ``gan_connections_refused_total`` and logged at most every ``LIMIT_LOG_EVERY_S``). The cap is
    per worker process: uvicorn's ``server_state.connections`` are that process's open connections, idle
    keep-alive ones included. Unlike uvicorn's ``limit_concurrency``, which parses the request before
    answering 503, nothing of the request is read. Picklable, as the config travels to worker processes."""

    def __init__(self, max_connections: int, retry_after_s: int, linger_s: float):
        self.max_connections = max_connections
        self.linger_s = linger_s
        self.answer = at_limit_answer(max_connections, retry_after_s)
        self.logged_at = -LIMIT_LOG_EVERY_S

    def __call__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Protocol:
        if len(server_state.connections) < self.max_connections:
            return BoundedHttpProtocol(config, server_state, app_state, _loop)
        metrics = app_state.get(METRICS_STATE)
        if metrics is not None:
            metrics.connections_refused.inc()
        now = time.monotonic()
        if now - self.logged_at >= LIMIT_LOG_EVERY_S:
            self.logged_at = now
            log.warning(
                "%d connections open (GAN_MAX_CONNECTIONS): new connections are answered 503 unread",
                self.max_connections,
            )
        return AtConnectionLimit(self.answer % new_request_id().encode("ascii"), self.linger_s)


def server_options(settings: Settings) -> dict[str, object]:
    """The ``ServerConfig`` keywords that bound clients (``BoundedHttpProtocol``, ``ConnectionLimit``)."""
    protocol: object = BoundedHttpProtocol
    if settings.max_connections:
        linger_s = settings.header_timeout_s
        protocol = ConnectionLimit(settings.max_connections, settings.retry_after_s, linger_s)
    return {
        "http": protocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "header_timeout_s": settings.header_timeout_s,
    }

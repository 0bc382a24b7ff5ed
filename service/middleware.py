"""Per-request plumbing as plain ASGI (no response buffering, no extra task): a request id on every answer,
per-endpoint metrics, one JSON access-log line, and the body size limit (413 in the service's JSON, with the
request id, when a route reads a body over ``max_body_bytes``)."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from prometheus_client.metrics import MetricWrapperBase
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import CLIENT_CLOSED
from service.logs import ACCESS_LOGGER
from service.metrics import Metrics

REQUEST_ID = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID.lower().encode("latin-1")
_CONTENT_LENGTH_KEY = b"content-length"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Made request ids: 32 hex digits, a random per-process prefix and a counter (unique without a syscall each)
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count()
access_log = logging.getLogger(ACCESS_LOGGER)


class BodyTooLarge(HTTPException):
    """Raised where a route reads its body, so the app's handler answers (JSON, request id, route metrics)."""

    def __init__(self, limit: int):
        super().__init__(
            413, f"the request body is larger than {limit} bytes (GAN_MAX_BODY_BYTES): send a smaller one"
        )


def limit_body(receive: Receive, limit: int, declared: int | None) -> Receive:
    """``receive`` refusing a body over ``limit`` bytes: at once when its Content-Length says so, else as
    its chunks arrive. Raised only when the route reads the body (one that never does gets no 413)."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        if declared is not None and declared > limit:
            raise BodyTooLarge(limit)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_limited


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.log = access_log
        self.max_body_bytes = max_body_bytes
        self._children: dict[tuple[str, str, int], tuple[MetricWrapperBase, MetricWrapperBase]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming, length = b"", None
        for key, value in scope["headers"]:
            if key == _REQUEST_ID_KEY:
                incoming = value
            elif key == _CONTENT_LENGTH_KEY:
                length = value
        # the server delivers no more than a valid Content-Length: only a larger or absent one needs counting
        if length is None or not length.isdigit() or int(length) > self.max_body_bytes:
            declared = int(length) if length is not None and length.isdigit() else None
            receive = limit_body(receive, self.max_body_bytes, declared)
        incoming_id = incoming.decode("latin-1")
        request_id = incoming_id if _SAFE_ID.match(incoming_id) else f"{_ID_PREFIX}{next(_id_counter):016x}"
        started = time.perf_counter()
        status, sent = CLIENT_CLOSED, 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID] = request_id
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = 500
            raise
        finally:
            self._record(scope, request_id, status, sent, time.perf_counter() - started)

    def _record(self, scope: Scope, request_id: str, status: int, sent: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        key = (endpoint, method, status)
        if (children := self._children.get(key)) is None:  # label lookups once per endpoint/method/status
            children = self._children[key] = (
                self.metrics.requests.labels(endpoint, method, str(status)),
                self.metrics.latency.labels(endpoint, method),
            )
        requests, latency = children
        requests.inc()
        latency.observe(seconds)
        if self.log and access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            fields = {
                "request_id": request_id,
                "method": method,
                "path": scope["path"],
                "query": scope.get("query_string", b"").decode("latin-1"),
                "endpoint": endpoint,
                "status": status,
                "bytes": sent,
                "duration_ms": round(seconds * 1000, 3),
                "client": client[0] if client else None,
            }
            # makeRecord + handle is what access_log.info does, less its walk up the stack for the caller
            access_log.handle(
                access_log.makeRecord(
                    ACCESS_LOGGER, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields}
                )
            )

"""Per-request plumbing as plain ASGI (no response buffering, no extra task): a request id on every answer,
per-endpoint metrics and one JSON access-log line."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import CLIENT_CLOSED
from service.logs import ACCESS_LOGGER
from service.metrics import Metrics

REQUEST_ID = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger(ACCESS_LOGGER)


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool):
        self.app = app
        self.metrics = metrics
        self.log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get(REQUEST_ID, "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
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
        self.metrics.requests.labels(endpoint, method, str(status)).inc()
        self.metrics.latency.labels(endpoint, method).observe(seconds)
        if self.log:
            client = scope.get("client")
            access_log.info(
                "request",
                extra={
                    "fields": {
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
                },
            )

"""Per-request plumbing as plain ASGI (no response buffering, no extra task): a request id on every answer,
per-endpoint metrics and one JSON access-log line."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from prometheus_client.metrics import MetricWrapperBase
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import CLIENT_CLOSED
from service.logs import ACCESS_LOGGER
from service.metrics import Metrics

REQUEST_ID = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID.lower().encode("latin-1")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Made request ids: 32 hex digits, a random per-process prefix and a counter (unique without a syscall each)
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count()
access_log = logging.getLogger(ACCESS_LOGGER)


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool):
        self.app = app
        self.metrics = metrics
        self.log = access_log
        self._children: dict[tuple[str, str, int], tuple[MetricWrapperBase, MetricWrapperBase]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == _REQUEST_ID_KEY), "")
        request_id = incoming if _SAFE_ID.match(incoming) else f"{_ID_PREFIX}{next(_id_counter):016x}"
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

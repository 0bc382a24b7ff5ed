"""Per-request plumbing as plain ASGI (no response buffering, no extra task): a request id on every answer,
per-endpoint metrics, one JSON access-log line, and the body's bounds (413 in the service's JSON, with the
request id, when a route reads a body over ``max_body_bytes``; 408 when the body is not all there within
``body_timeout_s``).

A request whose client went away before its answer was complete is logged and counted as 499, never as the
status of an answer nobody received. Under ``gan-serve`` the server tells each request when its connection is
lost (``ClientConnection`` in the scope's extensions, see ``service.cli``): a request whose answer has not
started is then cancelled at once, which drops its queued work. Under another server, the routes' own
disconnect watch (``unless_disconnected``) is what remains."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable

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


def new_request_id() -> str:
    """A request id unique to this process's lifetime (a random prefix and a counter: cheaper than uuid4)."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


access_log = logging.getLogger(ACCESS_LOGGER)


def saturated_body(reason: str) -> bytes:
    """The JSON error of a refusal made before the app runs (the queue door's 429, the connection cap's
    503)."""
    return json.dumps({"error": f"server saturated: {reason}"}).encode()


CLIENT_EXTENSION = "gan.client"  # scope["extensions"] key of the request's ClientConnection
NO_KEY = "gan.no_key"  # scope key set by service.auth.ApiKeyGate on a request without a valid key
ENDPOINT_KEY = "gan.endpoint"  # scope key naming the endpoint of a request answered before routing
STALLED = 408  # status logged and counted for a stream its client stopped reading (see StreamStalled)
DEADLINE = 504  # status logged and counted for a stream that missed its deadline part-way (StreamTimedOut)


class ClientConnection:
    """What the server (``service.cli``'s protocol) tells the app about one request's connection: whether the
    client went away before the answer was complete (``gone``, with one callback), and how to cut it."""

    __slots__ = ("_abort", "_callback", "gone")

    def __init__(self, abort: Callable[[], None]):
        self.gone = False
        self._callback: Callable[[], None] | None = None
        self._abort = abort

    def when_gone(self, callback: Callable[[], None] | None) -> None:
        self._callback = callback

    def lost(self) -> None:
        """Called by the server when the connection is lost before this request's answer was complete."""
        if not self.gone:
            self.gone = True
            callback, self._callback = self._callback, None
            if callback is not None:
                callback()

    def abort(self) -> None:
        """Close the connection at once, discarding what is buffered for it."""
        self._abort()


class StreamCutShort(Exception):
    """Raised by a streamed response that ended before its body was complete: its connection was aborted (the
    client sees an incomplete body, which it can tell from a complete one) and the request is logged and
    counted as ``status``, not as the 200 its status line said."""

    status = 500


class StreamStalled(StreamCutShort):
    """The stream's client stopped reading (``GAN_BULK_STALL_TIMEOUT_S``): counted as ``STALLED``."""

    status = STALLED


class StreamTimedOut(StreamCutShort):
    """A part of the stream missed its deadline after the answer had started: counted as ``DEADLINE``."""

    status = DEADLINE


class QueueDoor:
    """ASGI: while the batcher's queue is full, a request to an image route whose work would be admitted to
    it (``paths``, POST) is refused with the route's 429 at once, before its body is read, its input parsed or
    its latents computed, and without queueing behind that work (on the event loop or in the thread pool)
    of the requests in front of it. It would be refused anyway: the route's own check (in
    ``Batcher.generate``) refuses any request of at least one image then. So in a burst far larger than the
    queue, refusals cost the server little and come back at once; a refused request that was also invalid
    gets 429 rather than its 422."""

    def __init__(
        self,
        app: ASGIApp,
        queue_full: Callable[[], str | None],
        paths: frozenset[str],
        retry_after_s: int,
    ):
        self.app = app
        self.queue_full = queue_full
        self.paths = paths
        self.headers = [(b"content-type", b"application/json"), (b"retry-after", str(retry_after_s).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] in self.paths
            and scope["method"] == "POST"
            and NO_KEY not in scope  # a request without its API key gets its 401 first
        ):
            reason = self.queue_full()
            if reason is not None:
                body = saturated_body(reason)
                scope[ENDPOINT_KEY] = scope["path"]  # the route's label in the metrics and the log
                headers = [*self.headers, (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 429, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised where a route reads its body, so the app's handler answers (JSON, request id, route metrics)."""

    def __init__(self, limit: int):
        super().__init__(
            413, f"the request body is larger than {limit} bytes (GAN_MAX_BODY_BYTES): send a smaller one"
        )


class BodyTimedOut(HTTPException):
    """Raised where a route reads a body that is not complete in time: answered by the app's handler, and the
    connection closed (the rest of that body may still be on its way)."""

    def __init__(self, timeout_s: float):
        super().__init__(
            408,
            f"the request body was not received within {timeout_s:g} s (GAN_BODY_TIMEOUT_S)",
            headers={"Connection": "close"},
        )


def bound_body(receive: Receive, limit: int, declared: int | None, timeout_s: float) -> Receive:
    """``receive`` refusing a body over ``limit`` bytes (at once when its Content-Length says so, else as
    its chunks arrive) and one not complete within ``timeout_s`` of now. Raised only when the route reads the
    body (one that never does gets neither); once the body is in, ``receive`` is the server's again (what
    follows is the disconnect, awaited for as long as the answer streams)."""
    received = 0
    complete = False
    deadline = asyncio.get_running_loop().time() + timeout_s

    async def receive_bounded() -> Message:
        nonlocal received, complete
        if complete:
            return await receive()
        if declared is not None and declared > limit:
            raise BodyTooLarge(limit)
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise BodyTimedOut(timeout_s) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            complete = not message.get("more_body", False)
        else:
            complete = True
        return message

    return receive_bounded


class RequestContext:
    def __init__(
        self, app: ASGIApp, metrics: Metrics, access_log: bool, max_body_bytes: int, body_timeout_s: float
    ):
        self.app = app
        self.metrics = metrics
        self.log = access_log
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
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
        # a request that declares no body (Content-Length: 0, as a query-only POST) has none to bound
        declared = int(length) if length is not None and length.isdigit() else None
        if declared != 0:
            receive = bound_body(receive, self.max_body_bytes, declared, self.body_timeout_s)
        incoming_id = incoming.decode("latin-1")
        request_id = incoming_id if _SAFE_ID.match(incoming_id) else new_request_id()
        started = time.perf_counter()
        status, sent, answering, cancelled, cut_short = CLIENT_CLOSED, 0, False, False, False
        extensions = scope.get("extensions")
        client: ClientConnection | None = extensions.get(CLIENT_EXTENSION) if extensions else None
        task = asyncio.current_task() if client is not None else None
        if client is not None:

            def gone() -> None:  # the connection was lost: work for an answer not yet started is dropped
                nonlocal cancelled
                if not answering and task is not None:
                    cancelled = True
                    task.cancel()

            client.when_gone(gone)

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent, answering
            if message["type"] == "http.response.start":
                answering = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID] = request_id
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if not cancelled or task is None or task.uncancel() > 0:  # also (or only) the server's
                raise
            status = CLIENT_CLOSED
        except StreamCutShort as exc:  # already logged by the response, which aborted the connection
            status, cut_short = exc.status, True
            # one turn of the loop: the server learns the connection is gone (its callback was queued by the
            # abort) before this returns, rather than logging an answer left incomplete as its own error
            await asyncio.sleep(0)
        except Exception:
            status = 500
            raise
        finally:
            if client is not None:
                client.when_gone(None)
                if client.gone and not cut_short:  # nobody received (all of) this answer
                    status = CLIENT_CLOSED
            self._record(scope, request_id, status, sent, time.perf_counter() - started)

    def _record(self, scope: Scope, request_id: str, status: int, sent: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or scope.get(ENDPOINT_KEY) or "unmatched"
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

"""ASGI: the hot routes (``POST /generate``) straight from the service's own middleware to their endpoint.

Starlette puts its exception middleware, FastAPI's exit-stack middleware, the routers (the app's and the
included one's) and the route's request/response wrapper between the middleware and an endpoint: about half of
the event loop's Python time per single-image answer in a py-spy profile of the loop (reports/bench/NOTES.md).
An endpoint that takes only the ``Request``, validates its own query and returns a ``Response`` needs none of
it. Everything that made those layers matter stays: the middleware outside this one (request id, metrics,
access log, body limit, the queue door) runs as before; an exception the endpoint raises goes to the app's own
handler for it, so the 422s, 429s and 503s are the documented ones; anything else goes up to Starlette's error
middleware (500). Other methods and paths pass through, so ``GET /generate`` is still 405 and the documented
route stays in the OpenAPI document."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.middleware import ENDPOINT_KEY

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Any]


class HotLane:
    def __init__(
        self, app: ASGIApp, endpoints: Mapping[str, Endpoint], handlers: Mapping[Any, Handler]
    ) -> None:
        self.app = app
        self.endpoints = endpoints
        self.handlers = handlers  # the app's exception handlers (the dict itself: later ones count too)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http_post = scope["type"] == "http" and scope["method"] == "POST"
        endpoint = self.endpoints.get(scope["path"]) if http_post else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        scope[ENDPOINT_KEY] = scope["path"]  # the metrics' and the log's label (a route would set "route")
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        """The app's handler for ``exc``, found as Starlette's exception middleware finds it (a handler of
        500 or ``Exception`` belongs to its error middleware, outside)."""
        if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in self.handlers:
            return self.handlers[exc.status_code]
        found = (cls for cls in type(exc).__mro__ if cls in self.handlers and cls is not Exception)
        return self.handlers[cls] if (cls := next(found, None)) is not None else None

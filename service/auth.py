"""Optional API keys (``GAN_API_KEYS``): checked before any work is queued, compared in constant time.

``ApiKeyGate`` makes sure a request without a valid key never has its body read (so an unauthenticated
client cannot make the server read a large body), and keeps ``/docs``, ``/redoc`` and ``/openapi.json``
public or not (``GAN_PUBLIC_DOCS``); the routes' dependency is what answers the rest, and documents the scheme
in OpenAPI.

Without keys the routes carry no auth dependency at all (and the OpenAPI schema no security scheme): FastAPI
solves every dependency on every request, and a no-op one still costs a measurable share of a small request.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security
from fastapi.params import Depends
from fastapi.security import APIKeyHeader
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.middleware import NO_KEY


class _KeyCheck(APIKeyHeader):
    """The header scheme (documented in OpenAPI) that also checks the key: one dependency per request."""

    def __init__(self, settings: Settings):
        description = "Required: the server has GAN_API_KEYS set."
        super().__init__(name=settings.api_key_header, auto_error=False, description=description)
        self.header = settings.api_key_header
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]

    async def __call__(self, request: Request) -> str:
        candidate = (request.headers.get(self.header) or "").encode()
        if not key_matches(candidate, self.keys):
            raise HTTPException(
                401,
                detail=f"missing or invalid API key in header {self.header}",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        return candidate.decode()


def key_matches(candidate: bytes, keys: list[bytes]) -> bool:
    # compare against every key so the time taken does not reveal which one (or whether any) matched
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
DOCS_ASSETS = "/static-offline-docs/"  # Swagger UI's and ReDoc's scripts (fastapi-offline): never secret


class KeyRequired(HTTPException):
    """Raised where a request without a valid key would have its body read (the app's handler answers)."""

    def __init__(self, header: str, close: bool):
        headers = {"WWW-Authenticate": "ApiKey"} | ({"Connection": "close"} if close else {})
        super().__init__(401, detail=f"missing or invalid API key in header {header}", headers=headers)


class ApiKeyGate:
    """ASGI, added only when ``GAN_API_KEYS`` is set. A request without a valid key: to the docs, 401 at once
    unless ``GAN_PUBLIC_DOCS``; elsewhere 401 when the app would read its body, before one byte of it is
    read (FastAPI reads a body before it solves the key dependency); a route that reads no body answers 401
    from its dependency, or serves the request when it has none (the public operations routes, which take
    no body and answer without watching ``receive``). A 401 for a request that announced a body closes the
    connection, so the body is never read."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.header = settings.api_key_header.lower().encode("latin-1")
        self.name = settings.api_key_header
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self.public_docs = settings.public_docs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(DOCS_ASSETS):  # files: they watch receive
            await self.app(scope, receive, send)
            return
        candidate, announced = b"", False
        for name, value in scope["headers"]:
            if name == self.header:
                candidate = value
            elif name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")):
                announced = True
        if key_matches(candidate, self.keys):
            await self.app(scope, receive, send)
            return
        if scope["path"] in DOCS_PATHS and not self.public_docs:
            await JSONResponse(
                {"error": f"missing or invalid API key in header {self.name}"},
                status_code=401,
                headers={"WWW-Authenticate": "ApiKey"},
            )(scope, receive, send)
            return

        answering = False
        scope[NO_KEY] = True

        async def no_body_without_key() -> Message:
            if answering:  # a public route's answer watching for a disconnect: no body is read any more
                return await receive()
            raise KeyRequired(self.name, close=announced)

        async def send_marking(message: Message) -> None:
            nonlocal answering
            answering = True
            await send(message)

        await self.app(scope, no_body_without_key, send_marking)


def api_key_dependencies(settings: Settings) -> list[Depends]:
    """Route dependencies admitting only requests that carry one of the keys; none when no key is set."""
    return [Security(_KeyCheck(settings))] if settings.api_keys else []

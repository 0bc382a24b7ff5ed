"""A stand-in worker app for the supervisor's health check: ``GET /pid`` says which worker answered,
``POST /block`` blocks that worker's event loop (a handler calling something that never returns, as a stuck
batch on the loop would)."""

from __future__ import annotations

import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

BLOCK_S = 600.0  # longer than any test waits: the worker is replaced, not unblocked


async def pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


async def block(request: Request) -> PlainTextResponse:
    time.sleep(BLOCK_S)  # blocking the loop is the point
    return PlainTextResponse("unblocked")


app = Starlette(routes=[Route("/pid", pid), Route("/block", block, methods=["POST"])])

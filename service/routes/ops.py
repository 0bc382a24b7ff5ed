"""Operations: liveness (503 once warm-up has failed, so an orchestrator restarts the process), readiness
(503 until warmed up, with several workers until every worker is, and while draining) and Prometheus
metrics."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.metrics import MULTIPROC_DIR_ENV, workers_ready
from service.routes.common import ServiceContext


def readiness(ctx: ServiceContext) -> tuple[bool, str]:
    """Ready when this worker is warmed up and, with several workers, every one of them is: whichever worker a
    probe reaches, the answer is the server's, not only its own (a load balancer or a smoke test that saw
    200 from one worker would otherwise send work to another still warming up)."""
    lifecycle = ctx.lifecycle
    batcher = lifecycle.batcher
    if lifecycle.draining:
        return False, "draining"
    if batcher is None:
        return False, "starting"
    if batcher.failed:
        return False, batcher.failed
    if (why := batcher.runtime.unavailable) is not None:  # a remote inference backend down or slow
        return False, why
    if not batcher.ready:
        return False, "warming up"
    workers, directory = ctx.settings.workers, os.environ.get(MULTIPROC_DIR_ENV)
    if workers > 1 and ctx.metrics.multiprocess and directory:
        ready = workers_ready(directory)
        if ready < workers:
            return False, f"warming up: {ready} of {workers} workers ready"
    return True, "ready"


def build_router(ctx: ServiceContext) -> APIRouter:
    spec, settings = ctx.spec, ctx.settings
    router = APIRouter(tags=["operations"])

    @router.get(
        "/healthz",
        summary="The process is alive (503 once warm-up has failed: it will never become ready)",
        response_model=dict[str, str],
        responses={503: {"description": "Warm-up failed: restart the process."}},
    )
    async def healthz() -> JSONResponse:
        batcher = ctx.lifecycle.batcher
        if batcher is not None and batcher.failed:
            return JSONResponse({"status": batcher.failed}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.head(
        "/healthz",
        summary="As GET /healthz, without a body",
        response_class=Response,
        responses={
            200: {"description": "Alive."},
            503: {"description": "Warm-up failed: restart the process."},
        },
    )
    async def healthz_head() -> Response:
        batcher = ctx.lifecycle.batcher
        return Response(status_code=503 if batcher is not None and batcher.failed else 200)

    @router.get(
        "/readyz",
        summary="Model loaded and every batch size warmed up (503 before, and while draining)",
        responses={503: {"description": "Not ready: starting, warming up, draining or failed."}},
    )
    async def readyz() -> JSONResponse:
        ready, status = readiness(ctx)
        headers = {} if ready else {"Retry-After": str(settings.retry_after_s)}
        return JSONResponse(
            {"status": status, "model": spec.manifest.name},
            status_code=200 if ready else 503,
            headers=headers,
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router

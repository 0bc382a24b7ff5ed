"""Operations: liveness, readiness (503 until warmed up and while draining) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.config import Settings
from service.model_repo import ModelSpec


def readiness(request: Request) -> tuple[bool, str]:
    state = request.app.state
    batcher = getattr(state, "batcher", None)
    if state.draining:
        return False, "draining"
    if batcher is None:
        return False, "starting"
    if batcher.failed:
        return False, batcher.failed
    return (True, "ready") if batcher.ready else (False, "warming up")


def build_router(spec: ModelSpec, settings: Settings) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Model loaded and every batch size warmed up (503 before, and while draining)",
        responses={503: {"description": "Not ready: starting, warming up, draining or failed."}},
    )
    async def readyz(request: Request) -> JSONResponse:
        ready, status = readiness(request)
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
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router

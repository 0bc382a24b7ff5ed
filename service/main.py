"""The FastAPI app: ``create_app(settings)`` checks the model directory at once (a bad model never starts),
and its lifespan opens the runtime (ONNX Runtime sessions, or with ``GAN_INFERENCE_URL`` a client of a remote
Open Inference Protocol backend: ``open_runtime``), starts the batcher (which warms up every batch size before
``/readyz`` turns 200) and, on shutdown, finishes queued work before releasing them."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from contracts import native_latents
from service import errors
from service.auth import ApiKeyGate, api_key_dependencies
from service.batcher import Batcher
from service.config import Settings, with_model_hints
from service.hot_lane import HotLane
from service.metrics import METRICS_STATE, Metrics
from service.middleware import QueueDoor, RequestContext
from service.model_repo import ModelSpec, load_model_dir
from service.remote_runtime import RemoteRuntime
from service.routes import arithmetic, bulk, generate, inference_protocol, interpolate, models, ops, project
from service.routes.common import ServiceContext
from service.runtime import InferenceRuntime, Runtime
from service.shutdown import install_sigterm_drain

log = logging.getLogger(__name__)

RuntimeFactory = Callable[[ModelSpec, Settings], InferenceRuntime]
# the image routes whose work the batcher admits to its bounded queue (429 when full: see QueueDoor)
ADMITTED_PATHS = frozenset(
    {"/generate", "/v1/generate", "/v1/interpolate", "/v1/interpolate/labels"}
    | {"/v1/arithmetic", "/v1/every-label", "/v1/project", "/v1/edit"}
)


def open_runtime(spec: ModelSpec, settings: Settings) -> InferenceRuntime:
    """A remote backend's client when ``GAN_INFERENCE_URL`` is set, else local ONNX Runtime sessions; raises
    ``StartupError`` (or ``ModelDirError``) when it cannot serve the manifest's model."""
    return RemoteRuntime(spec, settings) if settings.inference_url else Runtime(spec, settings)


def load_spec(settings: Settings) -> ModelSpec:
    """The model directory to serve; with a remote backend its manifest.json only (no graph file here)."""
    return load_model_dir(settings.model_dir, settings.model_variant, local=settings.inference_url is None)


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (the app, the model's sessions, the imported libraries) out of
    the cyclic collector's reach: a full collection otherwise walks it all, 25-115 ms with every request in
    the process held (measured at 64 clients, reports/bench/NOTES.md), which set the p99."""
    gc.collect()
    gc.freeze()


NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings | None = None, runtime_factory: RuntimeFactory = open_runtime) -> FastAPI:
    settings = settings or Settings()
    spec = load_spec(settings)
    settings = with_model_hints(settings, spec.manifest.max_batch_hint)
    metrics = Metrics(settings.bulk_batch)  # the largest batch any stream runs
    ctx = ServiceContext(spec, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Metrics]]:
        runtime = runtime_factory(spec, settings)
        threads = runtime.intra_op_threads
        metrics.model_info.labels(
            spec.manifest.name, spec.manifest.version, runtime.providers[0], str(threads or "-")
        ).set(1)
        batcher = Batcher(runtime, settings, metrics)
        log.info(
            "runtime %s, intra-op threads: %s, bulk inference streams: %d",
            runtime.providers,
            threads or "-",
            batcher.streams,
        )
        if not native_latents.AVAILABLE:  # said, not hidden: the same images, more CPU a bulk image
            log.warning(
                "latents drawn with NumPy, holding the interpreter lock: %s",
                native_latents.UNAVAILABLE_BECAUSE,
            )
        batcher.start()
        ctx.lifecycle.batcher = batcher
        install_sigterm_drain(ctx.lifecycle, settings.drain_s)
        log.info("serving %s %s from %s", spec.manifest.name, spec.manifest.version, spec.directory)
        freeze_startup_heap()
        try:
            yield {METRICS_STATE: metrics}  # the server's state: gan-serve's connection cap counts into it
        finally:
            ctx.lifecycle.draining = True
            metrics.ready.set(0)
            await batcher.close()
            runtime.close()
            metrics.retire()
            log.info("stopped: queued work finished")

    # /docs and /redoc from assets shipped in the package (fastapi-offline), not a CDN: they render where the
    # service has no internet
    app = FastAPIOffline(
        title="GAN image generation",
        version=spec.manifest.version,
        summary=f"{'Conditional' if spec.conditional else 'Unconditional'} images from {spec.manifest.name}, "
        "dynamically batched on ONNX Runtime.",
        lifespan=lifespan,
        telemetry=None if settings.otel else NO_TELEMETRY,
    )  # no max_body_size: its 413 is plain text and bypasses the request id (RequestContext limits bodies)
    protected = api_key_dependencies(settings)
    for module in (generate, interpolate, arithmetic, project, bulk, models):
        app.include_router(module.build_router(ctx), dependencies=protected)
    ops_dependencies = [] if settings.public_ops else protected
    app.include_router(ops.build_router(ctx), dependencies=ops_dependencies)
    # the Open Inference Protocol (KServe v2): health as the operations routes, models and infer as the images
    app.include_router(inference_protocol.build_health_router(ctx), dependencies=ops_dependencies)
    app.include_router(inference_protocol.build_router(ctx), dependencies=protected)
    errors.install(app, settings.retry_after_s)
    if ctx.hot_endpoints:  # innermost: the hot routes' endpoints, straight from the middleware below
        app.add_middleware(HotLane, endpoints=ctx.hot_endpoints, handlers=app.exception_handlers)
    app.add_middleware(  # behind the API key gate
        QueueDoor,
        queue_full=lambda: ctx.lifecycle.batcher.queue_full() if ctx.lifecycle.batcher else None,
        paths=ADMITTED_PATHS | inference_protocol.infer_paths(spec),
        retry_after_s=settings.retry_after_s,
    )
    if settings.api_keys:  # inside RequestContext: a 401 still gets its request id, metrics and log line
        app.add_middleware(ApiKeyGate, settings=settings)
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        access_log=settings.access_log,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory service.main:app_from_env`` (settings from ``GAN_*``)."""
    return create_app(Settings())

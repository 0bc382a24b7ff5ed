"""What the routes share: their context, the seed rule, and the tail of every image route (disconnect-aware
waiting on the batcher, then rendering).

Routes get their context one way: each module's ``build_router(ctx)`` closes over one ``ServiceContext``. A
closure costs nothing per request, where FastAPI solves every injected dependency on every request (a
measurable share of a small one); the batcher, made later by the lifespan, is reached through ``ctx.batcher``.
"""

from __future__ import annotations

import asyncio
import functools
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from contracts.latents import MAX_SEED
from service import encoding, errors
from service.batcher import Batcher, SeededLatents
from service.config import Settings
from service.encoding import Format
from service.hot_lane import Endpoint
from service.metrics import Metrics
from service.middleware import CLIENT_EXTENSION
from service.model_repo import ModelSpec
from service.runtime import GraphKind

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class Lifecycle:
    """What the app's lifespan and SIGTERM change while the app lives."""

    batcher: Batcher | None = None  # set when the lifespan starts
    draining: bool = False  # set on SIGTERM (see service.shutdown) and at shutdown: /readyz answers 503


@dataclass(frozen=True, slots=True)
class ServiceContext:
    spec: ModelSpec
    settings: Settings
    metrics: Metrics
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    hot_endpoints: dict[str, Endpoint] = field(default_factory=dict)

    @property
    def batcher(self) -> Batcher:
        """The lifespan's batcher (requests are served only while the lifespan runs)."""
        batcher = self.lifecycle.batcher
        assert batcher is not None, "the app's lifespan has not started"
        return batcher


class QueryParser(Generic[M]):
    """The query string validated by ``model`` in one pydantic call, for the hot route: FastAPI's injection of
    each ``Query`` parameter costs several times that per request (and so would Starlette's ``query_params``
    here). Errors are the 422s FastAPI would give (``loc`` ``["query", name]``, the field's allowed range);
    beyond FastAPI, an unknown or repeated parameter is one (a misspelt ``seed`` must not silently give random
    images), and so is a number that ``int()``/``float()`` and pydantic's lax mode would read with another
    meaning than it shows: "7_0" as 70, "7.0" or " 7" as the int 7. Made once per route."""

    def __init__(self, model: type[M]):
        self.model = model
        self.order = tuple(model.model_fields)
        self.names = frozenset(self.order)
        kinds = {name: _number_kind(field.annotation) for name, field in model.model_fields.items()}
        self.ints = frozenset(name for name, kind in kinds.items() if kind is int)
        self.floats = frozenset(name for name, kind in kinds.items() if kind is float)

    def __call__(self, request: Request) -> M:
        pairs = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        query = dict(pairs)
        if len(query) != len(pairs):
            self._refuse(pairs)
        ints, floats, names = self.ints, self.floats, self.names
        for name, value in pairs:  # a few set lookups and str tests; anything odd takes the slow path
            if name in ints:
                usual = value.isdigit() and value.isascii()
            elif name in floats:
                usual = "_" not in value
            else:
                usual = name in names
            if not usual:
                self._refuse(pairs)
                break
        try:
            return self.model.model_validate(query)
        except ValidationError as exc:
            raise errors.query_invalid(self.model, exc) from None

    def _refuse(self, pairs: list[tuple[str, str]]) -> None:
        """Raise the 422 for unknown, repeated and misread parameters (a negative int passes, for pydantic
        to refuse with its range)."""
        found = errors.query_misfits(pairs, self.order)
        for name, value in pairs:
            if name in self.ints and PLAIN_INT.fullmatch(value) is None:
                found.append(
                    errors.query_number(self.model, name, value, "a plain decimal integer such as 70")
                )
            elif name in self.floats and "_" in value:
                found.append(
                    errors.query_number(self.model, name, value, "a plain decimal number such as 0.5")
                )
        if found:
            raise RequestValidationError(found)


def _number_kind(annotation: Any) -> type | None:
    """``int`` or ``float`` for a field of that type (optional or not), else None."""
    for kind in (int, float):
        if annotation is kind or kind in typing.get_args(annotation):
            return kind
    return None


PLAIN_INT = re.compile(r"-?[0-9]+")  # what a query or JSON key may write for an int


def hot_route(ctx: ServiceContext, path: str, endpoint: Endpoint) -> None:
    """Serve ``POST path`` by ``endpoint`` straight from the service's middleware (``service.hot_lane``), its
    documented FastAPI route staying for the OpenAPI document (and for 405s). For an endpoint that takes only
    the ``Request`` and validates by itself, FastAPI's route adds nothing but cost per request: dependency
    solving, an exit stack, routing and wrappers (reports/bench/NOTES.md). Only without API keys: with keys
    the documented route's key dependency must run."""
    if not ctx.settings.api_keys:
        ctx.hot_endpoints[path] = endpoint


def refuse_body(request: Request, instead: str) -> None:
    """Routes that take their parameters in the query string take no body: one there (say a JSON object with
    ``n``) would be ignored. A body is what a non-zero Content-Length or a Transfer-Encoding announces."""
    for key, value in request.scope["headers"]:
        if (key == b"content-length" and value.strip(b"0")) or key == b"transfer-encoding":
            raise errors.invalid(
                ("body",),
                f"this route takes its parameters in the query string, not in a body (it would be ignored); "
                f"for a JSON body use {instead}",
                None,
                "no body",
            )


def refuse_query(request: Request) -> None:
    """Routes that take a JSON body take no query parameter: one there (say ``?seed=5``) would be ignored."""
    if request.scope["query_string"]:
        pairs = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        raise RequestValidationError(errors.query_misfits(pairs, (), body=True))


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The OpenAPI ``parameters`` of a route that reads its query with ``QueryParser``, as FastAPI writes them
    for ``Query`` parameters (an enum refers to ``components/schemas``, where the body models put it)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": field}
        | ({"description": field["description"]} if "description" in field else {})
        for name, field in schema["properties"].items()
    ]


SeedField = Field(
    None,
    ge=0,
    le=MAX_SEED,
    description="Image i uses the latent of seed + i; random (and returned) when absent.",
)
TruncationField = Field(1.0, gt=0, le=1, description="Scales latents towards the mean: 0 < t <= 1.")
# strict=False: a strict enum takes only Format members, and JSON gives strings ("npy" still must match)
FormatField = Field(
    Format.png, strict=False, description="png (one image or a grid), npy (uint8 array) or json."
)


class StrictBody(BaseModel):
    """Request bodies: unknown fields and NaN/infinite numbers are errors, not silently accepted, and so is
    every coercion that could change meaning (strict mode): ``"7"`` or ``7.0`` for an int, ``0`` for a bool.
    An int is still a valid float."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class ImageInfo(BaseModel):
    index: int
    seed: int | None = Field(None, description="Seed of the image's latent (absent for explicit latents).")
    label: int | None = Field(None, description="Class index the image was generated under.")
    label_weights: list[float] | None = Field(None, description="Label mix (label interpolation only).")
    latent: list[float] = Field(description="The latent the image was generated from (after truncation).")
    png: str = Field(description="The image as base64 PNG.")


class ImagesJSON(BaseModel):
    seed: int | None = Field(None, description="The request's seed, when it had one.")
    truncation: float
    count: int
    image_shape: tuple[int, int, int]
    images: list[ImageInfo]


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, naming each bad field and its allowed range.")
    detail: list[dict[str, Any]] | None = Field(
        None, description="Validation errors: `loc` (where), `msg`, `input`, `allowed`."
    )


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ImagesJSON,  # the application/json form; png and npy are bytes
        "description": "PNG (a grid for several images), .npy bytes or JSON, per `format`.",
        "content": {encoding.PNG: {}, encoding.NPY: {}},
        "headers": {
            "X-Seed": {
                "description": "The seed used (chosen at random when the request had none).",
                "schema": {"type": "integer"},
            }
        },
    },
    401: {"model": ErrorBody, "description": "Missing or wrong API key (when the server has GAN_API_KEYS)."},
    422: {
        "model": ErrorBody,
        "description": "A parameter is out of range, of the wrong type, unknown or repeated, or the request "
        "asks for more images than the server's queue holds (it could never run); the body names the "
        "parameter and its range.",
    },
    429: {"model": ErrorBody, "description": "Queue full; retry after `Retry-After` seconds."},
    503: {
        "model": ErrorBody,
        "description": "Not accepting work (warm-up failed or shutting down), or, under gan-serve, the "
        "connection arrived over GAN_MAX_CONNECTIONS open ones (answered at once, unread; Retry-After).",
    },
    504: {"model": ErrorBody, "description": "The request's deadline passed."},
}


BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request body could not be read."},
    413: {"model": ErrorBody, "description": "The request body is larger than GAN_MAX_BODY_BYTES."},
}


def image_responses(spec: ModelSpec, refused: str, *, body: bool = True) -> dict[int | str, dict[str, Any]]:
    """``IMAGE_RESPONSES`` (with ``BODY_RESPONSES`` for a route that takes a JSON ``body``); for an
    unconditional model the 422 also says what it refuses (``refused``, e.g. "a `label`")."""
    responses = {**IMAGE_RESPONSES, **BODY_RESPONSES} if body else dict(IMAGE_RESPONSES)
    if spec.conditional:
        return responses
    description = (
        f"{IMAGE_RESPONSES[422]['description']} The served model is unconditional (it ignores labels): "
        f"{refused}, the body says why."
    )
    return {**responses, 422: {"model": ErrorBody, "description": description}}


async def compute(images: int, inline_max_images: int, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)``, on the event loop when it concerns at most ``inline_max_images`` images (cheaper than
    the hop to a worker thread and back), else in the thread pool so the loop stays free."""
    if images <= inline_max_images:
        return func(*args)
    return await run_in_threadpool(func, *args)


async def unless_disconnected(request: Request, work: Awaitable[T], check_after_s: float) -> T:
    """Await ``work`` in this task, cancelling it (and so dropping its queued images) if the client goes away.

    The client is watched (a task reading the connection) only once the request has waited ``check_after_s``
    (``disconnect_check_ms``): most requests are answered sooner, and for them the watcher would cost more
    than the little work a disconnect could save. Under ``gan-serve`` none is needed: its server tells
    ``RequestContext`` when the connection is lost, which cancels the request's task at once (a watcher task
    per request was a quarter of the event loop's time at 64 clients, reports/bench/NOTES.md)."""
    extensions = request.scope.get("extensions")
    if extensions and CLIENT_EXTENSION in extensions:
        return await work
    caller = asyncio.current_task()
    assert caller is not None
    state: dict[str, Any] = {"waiting": True, "gone": False, "watcher": None}

    async def disconnected() -> None:
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # e.g. an unread body over max_body_bytes: nothing left to watch
            return
        if state["waiting"]:
            state["gone"] = True
            caller.cancel()

    def watch() -> None:
        state["watcher"] = asyncio.ensure_future(disconnected())

    timer = asyncio.get_running_loop().call_later(check_after_s, watch)
    try:
        return await work
    except asyncio.CancelledError:
        if state["gone"] and caller.uncancel() == 0:  # our own cancellation, not the server's
            raise errors.ClientDisconnected from None
        raise
    finally:
        state["waiting"] = False
        timer.cancel()
        if state["watcher"] is not None:
            state["watcher"].cancel()


async def image_response(
    ctx: ServiceContext,
    request: Request,
    kind: GraphKind,
    z: np.ndarray | SeededLatents,
    condition: np.ndarray,
    fmt: Format,
    *,
    infos: Callable[[], list[dict[str, Any]]],
    seed: int | None,
    truncation: float,
    columns: int | None,
) -> Response:
    """The images of ``z`` under ``condition`` (labels or label weights) rendered in ``fmt``; the queued work
    is dropped if the client goes away first. ``infos`` (each image's seed/label/latent) is called for json
    only. For at most ``inline_max_images`` images the answer is encoded on the inference thread beside the
    batch (the event loop only writes it), else in the thread pool."""
    settings = ctx.settings
    n, padding = len(condition), settings.grid_padding
    render = _renderer(fmt, columns, padding)
    beside = n <= settings.inline_max_images
    work = ctx.batcher.generate(kind, z, condition, encode=render if beside else None)
    result = await unless_disconnected(request, work, settings.disconnect_check_ms / 1000)
    body = result if beside else await run_in_threadpool(render, result)
    headers = {"X-Seed": str(seed)} if seed is not None else {}
    if fmt is not Format.json:
        return Response(body, media_type=encoding.PNG if fmt is Format.png else encoding.NPY, headers=headers)
    payload = ImagesJSON(
        seed=seed,
        truncation=truncation,
        count=n,
        image_shape=body[0],
        images=[
            ImageInfo(index=i, png=png, **info)
            for i, (info, png) in enumerate(zip(infos(), body[1], strict=True))
        ],
    )
    return Response(payload.model_dump_json(exclude_none=True), media_type=encoding.JSON, headers=headers)


def _renderer(fmt: Format, columns: int | None, padding: int) -> Callable[[np.ndarray], Any]:
    """``images → body`` for ``fmt`` (json: the image shape and each image's base64 PNG)."""
    if fmt is Format.png:
        return functools.partial(encoding.png_response, columns=columns, padding=padding)
    if fmt is Format.npy:
        return encoding.npy_bytes
    return lambda images: (tuple(images.shape[1:]), [encoding.b64_png(image) for image in images])

"""Bulk synthetic data for augmentation: ``POST /v1/bulk`` streams ``x`` (uint8 images) and ``y`` (int64
labels) as an ``.npz`` written chunk by chunk, so memory stays flat however many images are asked for.

An unconditional model's images have no label: ``y`` is ``UNLABELLED`` (-1, never a class index) for every
image, and ``counts`` or ``weights``, which ask for labels, are refused (422).

No ``from __future__ import annotations`` here: the body model is bounded per served model, a closure value
FastAPI must evaluate."""

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from starlette.types import Message, Receive, Scope, Send

from contracts.latents import choose_seed
from service import encoding, label_mix
from service.batcher import Batcher, DeadlineExceeded, Lane, SeededLatents
from service.errors import check_range, check_seed_room, invalid, labels_ignored
from service.middleware import CLIENT_EXTENSION, StreamCutShort, StreamStalled, StreamTimedOut
from service.routes.bounds import bounded, one_of
from service.routes.common import (
    BODY_RESPONSES,
    ErrorBody,
    SeedField,
    ServiceContext,
    StrictBody,
    TruncationField,
    image_responses,
    refuse_query,
)
from service.runtime import GraphKind

log = logging.getLogger(__name__)

MAX_COUNT = 2**31 - 1  # static sanity bounds; the total is checked against max_bulk_n
MAX_WEIGHT = 1e6
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT)]


LABEL_KEY = re.compile(r"0|[1-9][0-9]*")  # a class index as the schema's property names write it


def _label_key(value: object) -> object:
    """JSON object keys are strings: a label key must be a class index in plain decimal digits ("3", not
    "03" or "-0")."""
    if isinstance(value, str):
        if LABEL_KEY.fullmatch(value) is None:
            raise PydanticCustomError(
                "int_parsing",
                "'{key}' is not a label: keys are class indices in digits, such as 3",
                {"key": value},
            )
        return int(value)
    return value


LabelKey = Annotated[int, BeforeValidator(_label_key)]
UNLABELLED = -1  # y of every image of an unconditional model


class BulkRequest(StrictBody):
    model_config = ConfigDict(
        json_schema_extra=one_of(
            {"counts": "object", "n": "null", "weights": "null"}, {"n": "integer", "counts": "null"}
        )
    )

    n: int | None = Field(None, ge=1, description="Number of images (balanced, or split by `weights`).")
    counts: dict[LabelKey, Count] | None = Field(
        None, description='Exact images per label instead of `n`, e.g. {"3": 500, "8": 500}.'
    )
    weights: dict[LabelKey, Weight] | None = Field(
        None, description="Relative share per label (missing labels get none); needs `n`."
    )
    seed: int | None = SeedField
    truncation: float = TruncationField
    shuffle: bool = Field(True, description="Shuffle the label order (seeded); off: sorted by label.")

    @model_validator(mode="after")
    def _one_mix(self) -> "BulkRequest":
        if self.counts is not None and (self.n is not None or self.weights is not None):
            raise ValueError("give counts alone, or n (with optional weights)")
        if self.counts is None and self.n is None:
            raise ValueError("give n (balanced or with weights) or counts")
        return self


class _BulkResponse(StreamingResponse):
    """A streamed response that always releases its bulk slot and stops its producer, however it ends.

    The status line waits for the first chunk: a request whose first chunk misses its deadline still gets its
    own answer, 504 with ``Retry-After`` (and any other failure before it, its own status). Once the answer
    has started, a stream that cannot be completed is cut short: its connection is aborted (under gan-serve;
    under another server, closed by the server when the app fails), so the client gets a body cut short,
    which is no valid archive (a chunked body without its last chunk, a zip without its central directory).
    The request is then logged and counted by the exception it raises: ``StreamTimedOut`` (504) when a chunk
    missed its deadline (``GAN_REQUEST_TIMEOUT_S``, counted from when the chunk was queued), and
    ``StreamStalled`` (408) when the client stopped reading: a write that waits ``stall_s``
    (``GAN_BULK_STALL_TIMEOUT_S``) for the client to take the bytes ends the stream and frees its slot."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], stall_s: float, **kwargs):
        super().__init__(content, **kwargs)
        self._source = content
        self._release = release
        self._stall_s = stall_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stalled = False

        async def send_or_stall(message: Message) -> None:
            nonlocal stalled
            try:
                async with asyncio.timeout(self._stall_s):
                    await send(message)
            except TimeoutError:
                stalled = True
                raise

        started = False
        try:
            first = await anext(self._source)  # before the status line: a failure still gets its own answer
            started = True
            self.body_iterator = _after(first, self._source)
            await super().__call__(scope, receive, send_or_stall)
        except DeadlineExceeded as exc:
            if not started:
                log.warning("bulk stream's first chunk missed its deadline: answered 504")
                raise
            ended: StreamCutShort = StreamTimedOut(f"a chunk missed its deadline: {exc}")
            log.warning("bulk stream ended part-way: %s", ended)
        except BaseException:
            if not stalled:
                raise
            ended = StreamStalled(f"the client read nothing for {self._stall_s} s")
            log.warning("bulk stream not read for %s s: ended, its slot freed", self._stall_s)
        else:
            return
        finally:
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                await self._source.aclose()  # type: ignore[attr-defined]
            self._release()
        extensions = scope.get("extensions") or {}
        if (client := extensions.get(CLIENT_EXTENSION)) is not None:
            client.abort()
        raise ended


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def build_router(ctx: ServiceContext) -> APIRouter:
    spec, settings = ctx.spec, ctx.settings
    router = APIRouter(tags=["bulk"])
    height, width, channels = spec.image_shape
    pixel_shape = (height, width) if channels == 1 else (height, width, channels)
    conditional = spec.conditional
    keys = {"propertyNames": {"enum": [str(label) for label in range(spec.num_classes)]}}
    Body = bounded(
        BulkRequest,
        {
            "n": {"maximum": settings.max_bulk_n},
            "counts": {**keys, "additionalProperties": {"maximum": settings.max_bulk_n}},
            "weights": keys,
        },
    )

    def counts_for(body: BulkRequest) -> np.ndarray:
        """Images per label; for an unconditional model one count, ``n``."""
        if not conditional and (body.counts is not None or body.weights is not None):
            field = "counts" if body.counts is not None else "weights"  # never both (BulkRequest)
            raise labels_ignored(spec.manifest.name, (("body", field), getattr(body, field)))
        mix = body.counts if body.counts is not None else body.weights
        top = spec.num_classes - 1
        for label in mix or {}:
            if not 0 <= label <= top:
                field = "counts" if body.counts is not None else "weights"
                raise invalid(
                    ("body", field, label),
                    f"label {label} is not a label of this model (0..{top})",
                    label,
                    f"labels 0..{top} as the keys of {field}",
                )
        if body.counts is not None:
            counts = np.zeros(spec.num_classes, dtype=np.int64)
            for label, count in body.counts.items():
                counts[label] = count
            total = int(counts.sum())
            if not 1 <= total <= settings.max_bulk_n:
                raise invalid(
                    ("body", "counts"),
                    f"counts add up to {total}",
                    total,
                    f"1 <= sum(counts) <= {settings.max_bulk_n}",
                )
            return counts
        assert body.n is not None
        check_range(("body", "n"), body.n, 1, settings.max_bulk_n)
        if not conditional:
            return np.array([body.n], dtype=np.int64)
        if body.weights is None:
            return label_mix.balanced_counts(body.n, spec.num_classes)
        if sum(body.weights.values()) <= 0:
            raise invalid(
                ("body", "weights"),
                "weights must have a positive sum",
                body.weights,
                "non-negative numbers with a positive sum",
            )
        return label_mix.counts_from_weights(body.weights, body.n, spec.num_classes)

    async def images(
        batcher: Batcher, labels: np.ndarray, seed: int, truncation: float
    ) -> AsyncIterator[np.ndarray]:
        async def chunk(start: int) -> np.ndarray:
            # the latents are drawn by the inference stream that runs each batch, right before its call
            stop = min(start + settings.bulk_chunk, len(labels))
            z = SeededLatents(seed + start, stop - start, spec.latent_dim, truncation)
            return await batcher.generate(GraphKind.MAIN, z, labels[start:stop], lane=Lane.BULK, admit=False)

        pending: deque[asyncio.Future[np.ndarray]] = deque()
        try:
            for start in range(0, len(labels), settings.bulk_chunk):
                pending.append(asyncio.ensure_future(chunk(start)))
                if len(pending) >= settings.bulk_prefetch:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    refusals = image_responses(spec, "`counts` and `weights` are refused")

    @router.post(
        "/v1/bulk",
        response_class=StreamingResponse,
        summary="Stream N labelled images as .npz",
        responses={
            200: {
                "description": "`.npz` with `x` uint8 [N, H, W(, C)] and `y` int64 [N]; image i "
                "uses seed + i. `y` holds each image's label, or -1 for every image when the model is "
                "unconditional (`conditional: false` in /v1/models): its images have no label.",
                "content": {encoding.NPZ: {}},
            },
            **{code: refusals[code] for code in (401, 422, 503)},
            **BODY_RESPONSES,
            429: {
                "model": ErrorBody,
                "description": "Too many bulk streams running; retry after `Retry-After`.",
            },
            504: {
                "model": ErrorBody,
                "description": "The first chunk missed its deadline; retry after `Retry-After`. A later "
                "chunk that misses it ends the stream cut short (no valid archive), counted as 504.",
            },
        },
    )
    async def bulk(request: Request, body: Body) -> StreamingResponse:  # type: ignore[valid-type]
        refuse_query(request)
        batcher = ctx.batcher
        counts = counts_for(body)
        total = int(counts.sum())
        check_seed_room(("body", "seed"), body.seed, total)
        seed = choose_seed(body.seed, total)
        if conditional:
            labels = y = label_mix.plan_labels(counts, seed, body.shuffle)
        else:  # the graph's label input is fed zeros; y says the images have none
            labels, y = np.zeros(total, dtype=np.int64), np.full(total, UNLABELLED, dtype=np.int64)
        release = batcher.acquire_stream()
        label_chunks = (y[i : i + settings.bulk_chunk] for i in range(0, total, settings.bulk_chunk))
        content = encoding.stream_npz(
            [
                (
                    "x",
                    np.dtype(np.uint8),
                    (total, *pixel_shape),
                    images(batcher, labels, seed, body.truncation),
                ),
                ("y", np.dtype(np.int64), (total,), label_chunks),
            ]
        )
        filename = f"{spec.manifest.name}-seed{seed}-n{total}.npz"
        return _BulkResponse(
            content,
            release,
            settings.bulk_stall_timeout_s,
            media_type=encoding.NPZ,
            headers={
                "X-Seed": str(seed),
                "X-Count": str(total),
                "Content-Disposition": f'attachment; filename="{filename}"',
            },
        )

    return router

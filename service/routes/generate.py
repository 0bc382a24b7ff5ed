"""Generation: ``POST /generate`` (the contract's query form) and ``POST /v1/generate`` (several labels).

An unconditional model (manifest ``conditional: false``) is generated without a label: ``/generate`` takes
none and refuses one (422), and ``/v1/generate``, which exists to name labels, refuses its ``labels``.

No ``from __future__ import annotations`` here: the query bounds are closure values FastAPI must evaluate.
"""

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from contracts import latents
from contracts.latents import choose_seed
from service.batcher import SeededLatents
from service.encoding import Format
from service.errors import check_count, check_range, check_seed_room, labels_ignored
from service.routes.bounds import bounded, label_range
from service.routes.common import (
    FormatField,
    QueryParser,
    SeedField,
    ServiceContext,
    StrictBody,
    TruncationField,
    compute,
    hot_route,
    image_response,
    image_responses,
    query_parameters,
    refuse_body,
    refuse_query,
)
from service.runtime import GraphKind


class LabelsRequest(StrictBody):
    labels: list[int] = Field(
        min_length=1, description="One image per entry, in order: image i has label labels[i]."
    )
    seed: int | None = SeedField
    same_latent: bool = Field(
        False, description="Every image uses the latent of `seed` (one style, many labels)."
    )
    truncation: float = TruncationField
    format: Format = FormatField
    columns: int | None = Field(
        None, ge=1, le=1024, description="Grid columns for png (default: near-square)."
    )


def build_router(ctx: ServiceContext) -> APIRouter:
    spec, settings = ctx.spec, ctx.settings
    router = APIRouter(tags=["generation"])
    top_label = spec.num_classes - 1
    conditional, model = spec.conditional, spec.manifest.name
    if conditional:
        label_type, label_field = int, Field(ge=0, le=top_label, description=f"Class index, 0..{top_label}.")
    else:
        label_type, label_field = (
            int | None,
            Field(None, description="Not accepted: the served model is unconditional (it ignores labels)."),
        )

    class GenerateQuery(BaseModel):
        """``POST /generate``'s query string (bounds from the served model and the settings)."""

        label: label_type = label_field  # type: ignore[valid-type]
        n: int = Field(1, ge=1, le=settings.max_n, description="Number of images.")
        seed: int | None = SeedField
        format: Format = FormatField
        truncation: float = TruncationField

    async def generate_images(
        request: Request,
        labels: np.ndarray,
        seed: int | None,
        same_latent: bool,
        truncation: float,
        fmt: Format,
        columns: int | None = None,
        *,
        seed_in: str = "body",
    ) -> Response:
        n = len(labels)
        count = 1 if same_latent else n
        check_seed_room((seed_in, "seed"), seed, count)
        seed = choose_seed(seed, count)
        z: np.ndarray | SeededLatents
        if fmt is not Format.json and not same_latent and n <= settings.inline_max_images:
            z = SeededLatents(seed, n, spec.latent_dim, truncation)  # drawn on the inference thread
        else:  # json answers carry the latents; large requests draw them in the thread pool
            draw, dim = latents.request_latents, spec.latent_dim
            z = await compute(count, settings.inline_max_images, draw, seed, count, dim, truncation)
        if same_latent:
            z = np.repeat(z, n, axis=0)
        seeds = [seed] * n if same_latent else range(seed, seed + n)
        return await image_response(
            ctx,
            request,
            GraphKind.MAIN,
            z,
            labels,
            fmt,
            infos=lambda: [  # an unconditional model's images have no label (its graph is fed zeros)
                {"seed": s, "label": int(label) if conditional else None, "latent": row.tolist()}
                for s, label, row in zip(seeds, labels, z, strict=True)
            ],
            seed=seed,
            truncation=truncation,
            columns=columns,
        )

    parse_query = QueryParser(GenerateQuery)
    labels_bounds = {"maxItems": settings.max_n} | ({"items": label_range(spec)} if conditional else {})
    Labels = bounded(LabelsRequest, {"labels": labels_bounds})

    @router.post(
        "/generate",
        responses=image_responses(spec, "a `label` is refused", body=False),
        response_class=Response,
        summary="Generate n images of one label",
        openapi_extra={"parameters": query_parameters(GenerateQuery)},
    )
    async def generate(request: Request) -> Response:
        # the hot route: its query is parsed by hand, not injected parameter by parameter
        refuse_body(request, "POST /v1/generate")
        if not conditional and "label" in request.query_params:
            raise labels_ignored(model, (("query", "label"), request.query_params["label"]))
        query = parse_query(request)
        labels = np.full(query.n, query.label if conditional else 0, dtype=np.int64)
        return await generate_images(
            request, labels, query.seed, False, query.truncation, query.format, seed_in="query"
        )

    hot_route(ctx, "/generate", generate)

    @router.post(
        "/v1/generate",
        responses=image_responses(spec, "every request is refused (`labels` are all it takes)"),
        response_class=Response,
        summary="Generate one image per entry of a list of labels (one grid)",
    )
    async def generate_labels(request: Request, body: Labels) -> Response:  # type: ignore[valid-type]
        refuse_query(request)
        if not conditional:
            raise labels_ignored(
                model, (("body", "labels"), body.labels), allowed="none: use /generate without a label"
            )
        check_count(("body", "labels"), len(body.labels), settings.max_n)
        for i, label in enumerate(body.labels):
            check_range(("body", "labels", i), label, 0, top_label)
        labels = np.asarray(body.labels, dtype=np.int64)
        return await generate_images(
            request, labels, body.seed, body.same_latent, body.truncation, body.format, body.columns
        )

    return router

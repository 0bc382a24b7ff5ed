"""Generation: ``POST /generate`` (the contract's query form) and ``POST /v1/generate`` (several labels).

No ``from __future__ import annotations`` here: the query bounds are closure values FastAPI must evaluate.
"""

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from contracts import latents
from service.batcher import Batcher
from service.config import Settings
from service.encoding import Format
from service.errors import check_count, check_range
from service.model_repo import ModelSpec
from service.routes.common import (
    IMAGE_RESPONSES,
    BatcherDep,
    FormatField,
    SeedField,
    StrictBody,
    TruncationField,
    choose_seed,
    compute,
    parse_query,
    query_parameters,
    render,
    unless_disconnected,
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


def build_router(spec: ModelSpec, settings: Settings) -> APIRouter:
    router = APIRouter(tags=["generation"])
    top_label = spec.num_classes - 1

    class GenerateQuery(BaseModel):
        """``POST /generate``'s query string (bounds from the served model and the settings)."""

        label: int = Field(ge=0, le=top_label, description=f"Class index, 0..{top_label}.")
        n: int = Field(1, ge=1, le=settings.max_n, description="Number of images.")
        seed: int | None = SeedField
        format: Format = FormatField
        truncation: float = TruncationField

    async def generate_images(
        request: Request,
        batcher: Batcher,
        labels: np.ndarray,
        seed: int | None,
        same_latent: bool,
        truncation: float,
        fmt: Format,
        columns: int | None = None,
    ) -> Response:
        n = len(labels)
        seed = choose_seed(seed, 1 if same_latent else n)
        count = 1 if same_latent else n
        z = await compute(
            count,
            settings.inline_max_images,
            latents.request_latents,
            seed,
            count,
            spec.latent_dim,
            truncation,
        )
        if same_latent:
            z = np.repeat(z, n, axis=0)
        images = await unless_disconnected(request, batcher.generate(GraphKind.MAIN, z, labels))
        seeds = [seed] * n if same_latent else list(range(seed, seed + n))
        infos = (
            []
            if fmt is not Format.json
            else [
                {"seed": s, "label": int(label), "latent": row.tolist()}
                for s, label, row in zip(seeds, labels, z, strict=True)
            ]
        )
        return await render(
            images,
            fmt,
            infos=infos,
            seed=seed,
            truncation=truncation,
            columns=columns,
            settings=settings,
        )

    @router.post(
        "/generate",
        responses=IMAGE_RESPONSES,
        response_class=Response,
        summary="Generate n images of one label",
        openapi_extra={"parameters": query_parameters(GenerateQuery)},
    )
    async def generate(request: Request) -> Response:
        # the hot route: its query is parsed by hand and the batcher read off the app, not injected
        query = parse_query(GenerateQuery, request)
        labels = np.full(query.n, query.label, dtype=np.int64)
        return await generate_images(
            request, request.app.state.batcher, labels, query.seed, False, query.truncation, query.format
        )

    @router.post(
        "/v1/generate",
        responses=IMAGE_RESPONSES,
        response_class=Response,
        summary="Generate one image per entry of a list of labels (one grid)",
    )
    async def generate_labels(request: Request, batcher: BatcherDep, body: LabelsRequest) -> Response:
        check_count(("body", "labels"), len(body.labels), settings.max_n)
        for i, label in enumerate(body.labels):
            check_range(("body", "labels", i), label, 0, top_label)
        labels = np.asarray(body.labels, dtype=np.int64)
        return await generate_images(
            request, batcher, labels, body.seed, body.same_latent, body.truncation, body.format, body.columns
        )

    return router

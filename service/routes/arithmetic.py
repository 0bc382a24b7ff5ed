"""Latent arithmetic (DCGAN, Radford et al. 2016): weighted sums of averaged latents, and one latent under
every label ("same style, every digit").

An unconditional model renders the sum once, without a label; it refuses ``labels`` and every-label (422).

No ``from __future__ import annotations`` here: the body models are bounded per served model, closure values
FastAPI must evaluate."""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from contracts import latents
from service.encoding import Format
from service.errors import check_count, check_images, check_range, invalid, labels_ignored, no_latent_space
from service.routes.bounds import bounded, label_range, latent_bounds
from service.routes.common import (
    FormatField,
    ServiceContext,
    StrictBody,
    TruncationField,
    image_response,
    image_responses,
    refuse_query,
)
from service.routes.latent_source import LatentSource, resolve
from service.runtime import GraphKind

Seed = Annotated[int, Field(ge=0, le=latents.MAX_SEED)]
MAX_WEIGHT = 100.0


class Term(StrictBody):
    seeds: list[Seed] = Field(min_length=1, description="The term is the mean latent of these seeds.")
    weight: float = Field(1.0, ge=-MAX_WEIGHT, le=MAX_WEIGHT, description="Its coefficient in the sum.")


class ArithmeticRequest(StrictBody):
    terms: list[Term] = Field(min_length=1, description="result = sum(weight * mean latent of seeds).")
    labels: list[int] | None = Field(None, min_length=1, description="Labels to render under (default: all).")
    show_terms: bool = Field(False, description="Each row shows the terms' mean latents, then the result.")
    truncation: float = TruncationField
    format: Format = FormatField


class EveryLabelRequest(LatentSource):
    truncation: float = TruncationField
    format: Format = FormatField


def build_router(ctx: ServiceContext) -> APIRouter:
    spec, settings = ctx.spec, ctx.settings
    router = APIRouter(tags=["latent arithmetic"])
    top_label = spec.num_classes - 1
    conditional, model = spec.conditional, spec.manifest.name
    all_labels = list(range(spec.num_classes)) if conditional else [0]  # an unconditional graph is fed zeros
    labels_bounds = {"maxItems": settings.max_n} | ({"items": label_range(spec)} if conditional else {})
    Body = bounded(
        ArithmeticRequest,
        {"terms": {"maxItems": settings.max_terms}, "labels": labels_bounds},
        terms=list[bounded(Term, {"seeds": {"maxItems": settings.max_seeds_per_term}})],  # type: ignore[misc]
    )
    EveryLabelBody = bounded(EveryLabelRequest, {"latent": latent_bounds(spec, settings)})

    @router.post(
        "/v1/arithmetic",
        responses=image_responses(spec, "`labels` are refused"),
        response_class=Response,
        summary="Render a weighted sum of mean latents under one or more labels",
    )
    async def arithmetic(request: Request, body: Body) -> Response:  # type: ignore[valid-type]
        refuse_query(request)
        if not spec.manifest.has_latent_space:
            raise no_latent_space(model, "latent arithmetic")
        check_count(("body", "terms"), len(body.terms), settings.max_terms)
        for i, term in enumerate(body.terms):
            check_count(("body", "terms", i, "seeds"), len(term.seeds), settings.max_seeds_per_term)
        if not conditional and body.labels is not None:
            raise labels_ignored(model, (("body", "labels"), body.labels))
        labels = body.labels if body.labels is not None else all_labels
        check_count(("body", "labels"), len(labels), settings.max_n)
        for i, label in enumerate(labels):
            check_range(("body", "labels", i), label, 0, top_label)
        per_label = len(body.terms) + 1 if body.show_terms else 1  # the terms' means, then the result
        check_images(("body",), len(labels) * per_label, settings.max_queue_images)
        means = np.stack([latents.mean_latent(term.seeds, spec.latent_dim) for term in body.terms])
        means = latents.truncate(means, body.truncation)
        result = latents.weighted_sum([t.weight for t in body.terms], list(means))
        row = np.concatenate([means, result[None]]) if body.show_terms else result[None]
        z = np.concatenate([row] * len(labels))
        image_labels = np.repeat(np.asarray(labels, dtype=np.int64), len(row))
        return await image_response(
            ctx,
            request,
            GraphKind.MAIN,
            z,
            image_labels,
            body.format,
            infos=lambda: [
                {"label": int(label) if conditional else None, "latent": latent.tolist()}
                for label, latent in zip(image_labels, z, strict=True)
            ],
            seed=None,
            truncation=body.truncation,
            columns=len(row) if body.show_terms else len(labels),
        )

    @router.post(
        "/v1/every-label",
        responses=image_responses(spec, "every request is refused (it renders every label)"),
        response_class=Response,
        summary="One latent (one style) rendered under every label",
    )
    async def every_label(request: Request, body: EveryLabelBody) -> Response:  # type: ignore[valid-type]
        refuse_query(request)
        if not conditional:
            raise invalid(
                ("body",),
                f"model {model!r} is unconditional: it ignores labels, so every label would give the same "
                "image",
                None,
                "none: a conditional model (see `conditional` in /v1/models)",
            )
        check_images(("body",), spec.num_classes, settings.max_queue_images)
        latent = resolve(body, ("body",), spec, settings, body.truncation)
        z = np.repeat(latent[None], spec.num_classes, axis=0)
        labels = np.arange(spec.num_classes, dtype=np.int64)
        return await image_response(
            ctx,
            request,
            GraphKind.MAIN,
            z,
            labels,
            body.format,
            infos=lambda: [
                {"seed": body.seed, "label": int(label), "latent": latent.tolist()} for label in labels
            ],
            seed=body.seed,
            truncation=body.truncation,
            columns=spec.num_classes,
        )

    return router

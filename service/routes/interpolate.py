"""Interpolation: between two latents under one label, or between two labels with the latent held fixed.

An unconditional model interpolates latents without a label (``UnlabelledInterpolateRequest``, a label is a
422) and cannot morph labels (422). No ``from __future__ import annotations`` here: the body model is chosen
per served model, a closure value FastAPI must evaluate.
"""

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from contracts import latents
from service.encoding import Format
from service.errors import NotSupported, check_range, labels_ignored, no_latent_space
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

STEPS_FIELD = Field(
    8, ge=2, description="Images along the path, both ends included (at most the server's max_steps)."
)


class InterpolateRequest(StrictBody):
    start: LatentSource
    end: LatentSource
    label: int = Field(ge=0, description="Class index every image is generated under.")
    steps: int = STEPS_FIELD
    method: Literal["slerp", "lerp"] = Field(
        "slerp", description="Spherical (default) or linear interpolation."
    )
    truncation: float = TruncationField
    format: Format = FormatField


class UnlabelledInterpolateRequest(InterpolateRequest):
    """``/v1/interpolate``'s body when the served model is unconditional."""

    label: int | None = Field(None, description="Not accepted: the served model is unconditional.")


class LabelInterpolateRequest(LatentSource):
    start_label: int = Field(ge=0, description="Class at t = 0.")
    end_label: int = Field(ge=0, description="Class at t = 1.")
    steps: int = STEPS_FIELD
    truncation: float = TruncationField
    format: Format = FormatField


def build_router(ctx: ServiceContext) -> APIRouter:
    spec, settings = ctx.spec, ctx.settings
    router = APIRouter(tags=["interpolation"])
    top_label = spec.num_classes - 1
    conditional, model = spec.conditional, spec.manifest.name
    latent = {"latent": latent_bounds(spec, settings)}
    steps = {"steps": {"maximum": settings.max_steps}}
    Source = bounded(LatentSource, latent)
    Body = bounded(
        InterpolateRequest if conditional else UnlabelledInterpolateRequest,
        steps | ({"label": label_range(spec)} if conditional else {}),
        start=Source,
        end=Source,
    )
    ends = {"start_label": label_range(spec), "end_label": label_range(spec)} if conditional else {}
    LabelBody = bounded(LabelInterpolateRequest, latent | steps | ends)

    @router.post(
        "/v1/interpolate",
        responses=image_responses(spec, "a `label` is refused"),
        response_class=Response,
        summary="Walk from one latent to another under one label (a strip of images)",
    )
    async def interpolate(request: Request, body: Body) -> Response:  # type: ignore[valid-type]
        refuse_query(request)
        if not spec.manifest.has_latent_space:
            raise no_latent_space(model, "interpolation between latents")
        if conditional:
            check_range(("body", "label"), body.label, 0, top_label)
        elif body.label is not None:
            raise labels_ignored(model, (("body", "label"), body.label))
        check_range(("body", "steps"), body.steps, 2, settings.max_steps)
        start = resolve(body.start, ("body", "start"), spec, settings, body.truncation)
        end = resolve(body.end, ("body", "end"), spec, settings, body.truncation)
        ts = latents.interpolation_steps(body.steps)
        z = (latents.slerp if body.method == "slerp" else latents.lerp)(start, end, ts)
        labels = np.full(body.steps, body.label if conditional else 0, dtype=np.int64)

        def infos() -> list[dict[str, Any]]:
            rows = [{"label": body.label, "latent": row.tolist()} for row in z]
            rows[0]["seed"], rows[-1]["seed"] = body.start.seed, body.end.seed
            return rows

        return await image_response(
            ctx,
            request,
            GraphKind.MAIN,
            z,
            labels,
            body.format,
            infos=infos,
            seed=None,
            truncation=body.truncation,
            columns=body.steps,
        )

    @router.post(
        "/v1/interpolate/labels",
        responses={
            **image_responses(spec, "every request is refused (it morphs labels)"),
            501: {"description": "The model directory has no label_morph graph."},
        },
        response_class=Response,
        summary="Morph one latent from one label to another through the label embedding",
    )
    async def interpolate_labels(request: Request, body: LabelBody) -> Response:  # type: ignore[valid-type]
        refuse_query(request)
        if not spec.manifest.has_latent_space:
            raise no_latent_space(model, "label morphing (one latent through mixed labels)")
        if not conditional:
            raise labels_ignored(
                model,
                (("body", "start_label"), body.start_label),
                (("body", "end_label"), body.end_label),
                allowed="none: use /v1/interpolate (latents) without a label",
            )
        if spec.label_morph is None:
            raise NotSupported(
                f"model {spec.manifest.name!r} does not support label interpolation: "
                + (
                    "its remote inference backend (GAN_INFERENCE_URL) serves the main graph only"
                    if settings.inference_url
                    else "its manifest has no extra_graphs.label_morph graph (z, label_weights) -> image"
                )
            )
        check_range(("body", "start_label"), body.start_label, 0, top_label)
        check_range(("body", "end_label"), body.end_label, 0, top_label)
        check_range(("body", "steps"), body.steps, 2, settings.max_steps)
        latent = resolve(body, ("body",), spec, settings, body.truncation)
        ts = latents.interpolation_steps(body.steps).astype(np.float32)[:, None]
        eye = np.eye(spec.num_classes, dtype=np.float32)
        weights = ((1 - ts) * eye[body.start_label] + ts * eye[body.end_label]).astype(np.float32)
        z = np.repeat(latent[None], body.steps, axis=0)
        return await image_response(
            ctx,
            request,
            GraphKind.LABEL_MORPH,
            z,
            weights,
            body.format,
            infos=lambda: [
                {"seed": body.seed, "label_weights": w.tolist(), "latent": latent.tolist()} for w in weights
            ],
            seed=body.seed,
            truncation=body.truncation,
            columns=body.steps,
        )

    return router

"""Real images in: projection (GAN inversion) and editing.

``/v1/project`` finds the latent of an image: the model's encoder (``encoder.onnx``, trained against the
frozen generator by ``gan-train-encoder``) maps (image, label) to a latent, which the generator renders back
as the reconstruction. Without a label, the image is encoded under every label and the label whose
reconstruction is closest (mean squared pixel error) is used. ``/v1/edit`` projects, then re-generates: the
same handwriting under other labels (``restyle``), a walk between two real images (``interpolate``) or images
from latents near it (``lookalikes``). Both go through the batcher (encoder rows, then generator rows). No
refinement step after the encoder: the service never differentiates through the generator. A model without
an encoder answers 501.
"""

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field

from contracts import latents
from service import encoding
from service.encoding import Format
from service.errors import NotSupported, check_count, check_range, check_seed_room, invalid, no_latent_space
from service.image_input import MAX_PIXELS, RULE, decode_image
from service.routes.bounds import bounded, label_range
from service.routes.common import (
    BODY_RESPONSES,
    IMAGE_RESPONSES,
    ErrorBody,
    FormatField,
    ServiceContext,
    StrictBody,
    image_response,
    refuse_query,
    unless_disconnected,
)
from service.runtime import GraphKind

MAX_IMAGE_CHARS = 4 * MAX_PIXELS  # base64 text of an image; checked by the route and stated in the schema
IMAGE_FIELD = Field(description=f"The image: {RULE}.")
LABEL_FIELD = Field(
    None, ge=0, description="The digit's class; absent: the label whose reconstruction is closest is used."
)


class ProjectRequest(StrictBody):
    image: str = IMAGE_FIELD
    label: int | None = LABEL_FIELD


class Projection(BaseModel):
    label: int = Field(description="The label the latent was found under.")
    label_chosen: bool = Field(description="True when the request had no label and the service chose it.")
    latent: list[float]
    error: float = Field(description="Mean squared pixel error of the reconstruction, pixels in [0, 1].")
    errors: list[float] | None = Field(None, description="The error under each label (when it was chosen).")
    image: str = Field(description="The input as the model saw it (greyscale, resized), as base64 PNG.")
    reconstruction: str = Field(description="The generator's image of the latent, as base64 PNG.")


class EditRequest(StrictBody):
    image: str = IMAGE_FIELD
    label: int | None = LABEL_FIELD
    mode: Literal["restyle", "interpolate", "lookalikes"] = Field(
        "restyle",
        description="restyle: the same handwriting under `labels`; interpolate: from `image` to `end_image` "
        "in `steps`; lookalikes: `n` images from latents near the projection (`spread`, `seed`). A field of "
        "another mode is refused (422), not ignored.",
    )
    labels: list[int] | None = Field(
        None, min_length=1, description="restyle: labels to render (default all)."
    )
    end_image: str | None = Field(None, description="interpolate: the end image.")
    end_label: int | None = Field(
        None, ge=0, description="interpolate: the end image's class (absent: chosen)."
    )
    steps: int = Field(
        8,
        ge=2,
        description="interpolate: images along the path, both ends included (at most the server's "
        "max_steps).",
    )
    method: Literal["slerp", "lerp"] = Field("slerp", description="interpolate: spherical or linear.")
    n: int = Field(8, ge=1, description="lookalikes: how many (at most the server's max_n).")
    spread: float = Field(0.5, gt=0, le=2, description="lookalikes: latent + spread * N(0, I).")
    seed: int | None = Field(
        None, ge=0, le=latents.MAX_SEED, description="lookalikes: look-alike i adds the latent of seed + i."
    )
    format: Format = FormatField


# the fields each mode of /v1/edit reads; every mode reads the others (image, label, mode, format)
MODE_FIELDS: dict[str, tuple[str, ...]] = {
    "restyle": ("labels",),
    "interpolate": ("end_image", "end_label", "steps", "method"),
    "lookalikes": ("n", "spread", "seed"),
}
_MODE_OF = {name: mode for mode, names in MODE_FIELDS.items() for name in names}
assert set(MODE_FIELDS) == set(get_args(EditRequest.model_fields["mode"].annotation))


def refuse_other_modes(body: EditRequest) -> None:
    """A 422 naming each field the client sent that ``body.mode`` does not read (with the mode that does):
    it would be silently ignored. A null counts as absent (what leaving an optional field out means)."""
    found = []
    for name in type(body).model_fields:
        mode = _MODE_OF.get(name)
        if mode is None or mode == body.mode or name not in body.model_fields_set:
            continue
        value = getattr(body, name)
        if value is None:
            continue
        found.append(
            {
                "type": "value_error",
                "loc": ("body", name),
                "msg": f"not used by mode {body.mode!r}: {name} is a field of mode {mode!r}",
                "input": None if name == "end_image" else value,
                "allowed": f"leave {name} out, or use mode {mode!r}",
            }
        )
    if found:
        raise RequestValidationError(found)


@dataclass
class _Projected:
    image: np.ndarray  # uint8 [H, W, C], as the model saw it
    label: int
    chosen: bool
    latent: np.ndarray
    reconstruction: np.ndarray
    errors: np.ndarray  # per label tried


ENCODER_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "The body, or an image in it, is over the size bounds."},
    501: {"model": ErrorBody, "description": "The served model has no encoder (manifest `encoder`)."},
}


def build_router(ctx: ServiceContext) -> APIRouter:
    spec, settings = ctx.spec, ctx.settings
    router = APIRouter(tags=["projection"])
    top_label, classes = spec.num_classes - 1, spec.num_classes
    one_label = label_range(spec)
    image = {"maxLength": MAX_IMAGE_CHARS}
    Project = bounded(ProjectRequest, {"image": image, "label": one_label})
    Edit = bounded(
        EditRequest,
        {
            "image": image,
            "label": one_label,
            "end_image": image,
            "end_label": one_label,
            "labels": {"items": one_label, "maxItems": settings.max_n},
            "steps": {"maximum": settings.max_steps},
            "n": {"maximum": settings.max_n},
        },
    )

    def require_encoder() -> None:
        if not spec.manifest.has_latent_space:
            raise no_latent_space(spec.manifest.name, "projection (finding an image's latent)")
        if spec.encoder is None and spec.manifest.encoder is not None:  # graphs run remotely
            raise NotSupported(
                "projection needs the encoder graph, which a remote inference backend (GAN_INFERENCE_URL) "
                "does not serve"
            )
        if spec.encoder is None:
            raise NotSupported(
                f"model {spec.manifest.name!r} has no encoder, so it cannot project images: its manifest has "
                "no `encoder` entry (add one with gan-train-encoder, docs/training.md)"
            )

    async def project(
        request: Request, images: list[np.ndarray], labels: list[int | None], *, delivered: bool
    ) -> list[_Projected]:
        """Encoder rows (every label for an image without one), then the generator's reconstructions.
        ``delivered``: the reconstructions are the caller's answer (one image each in
        ``gan_images_generated_total``); else they are intermediate, like the encoder rows: not counted."""
        tried = [list(range(classes)) if label is None else [label] for label in labels]
        rows = np.stack([image for image, each in zip(images, tried, strict=True) for _ in each])
        row_labels = np.asarray([label for each in tried for label in each], dtype=np.int64)
        wait = settings.disconnect_check_ms / 1000
        z = await unless_disconnected(
            request, ctx.batcher.generate(GraphKind.ENCODER, rows, row_labels, counted=0), wait
        )
        z = np.ascontiguousarray(z, dtype=np.float32)
        counted = len(images) if delivered else 0
        again = await unless_disconnected(
            request, ctx.batcher.generate(GraphKind.MAIN, z, row_labels, counted=counted), wait
        )
        errors = np.mean(np.square((again.astype(np.float32) - rows) / 255), axis=(1, 2, 3))
        out, start = [], 0
        for image, each, label in zip(images, tried, labels, strict=True):
            block = slice(start, start + len(each))
            best = start + int(np.argmin(errors[block]))
            out.append(
                _Projected(image, int(row_labels[best]), label is None, z[best], again[best], errors[block])
            )
            start += len(each)
        return out

    def read(loc: tuple[str, ...], data: str, label: int | None) -> np.ndarray:
        if len(data) > MAX_IMAGE_CHARS:
            name = loc[-1]
            raise invalid(
                loc,
                f"{name} is {len(data)} characters of base64, more than {MAX_IMAGE_CHARS}",
                None,
                f"at most {MAX_IMAGE_CHARS} characters: {RULE}",
            )
        if label is not None:
            check_range((*loc[:-1], "label" if loc[-1] == "image" else "end_label"), label, 0, top_label)
        return decode_image(loc, data, spec.image_shape)

    @router.post(
        "/v1/project",
        responses={**IMAGE_RESPONSES, **BODY_RESPONSES, **ENCODER_RESPONSES, 200: {"model": Projection}},
        response_model=Projection,
        summary="Find the latent of a real image (GAN inversion) and its reconstruction",
    )
    async def project_image(request: Request, body: Project) -> Response:  # type: ignore[valid-type]
        refuse_query(request)
        require_encoder()
        image = read(("body", "image"), body.image, body.label)
        (found,) = await project(request, [image], [body.label], delivered=True)
        result = Projection(
            label=found.label,
            label_chosen=found.chosen,
            latent=found.latent.tolist(),
            error=float(found.errors.min()),
            errors=[float(e) for e in found.errors] if found.chosen else None,
            image=encoding.b64_png(found.image),
            reconstruction=encoding.b64_png(found.reconstruction),
        )
        return Response(result.model_dump_json(exclude_none=True), media_type=encoding.JSON)

    @router.post(
        "/v1/edit",
        responses={**IMAGE_RESPONSES, **BODY_RESPONSES, **ENCODER_RESPONSES},
        response_class=Response,
        summary="Project a real image, then re-generate: other labels, a walk to another image, look-alikes",
    )
    async def edit(request: Request, body: Edit) -> Response:  # type: ignore[valid-type]
        refuse_query(request)
        require_encoder()
        refuse_other_modes(body)
        image = read(("body", "image"), body.image, body.label)
        seed = None
        if body.mode == "restyle":
            labels = body.labels if body.labels is not None else list(range(classes))
            check_count(("body", "labels"), len(labels), settings.max_n)
            for i, label in enumerate(labels):
                check_range(("body", "labels", i), label, 0, top_label)
            (found,) = await project(request, [image], [body.label], delivered=False)
            z = np.repeat(found.latent[None], len(labels), axis=0)
            kind, condition, columns = GraphKind.MAIN, np.asarray(labels, dtype=np.int64), len(labels)
            rows = [{"label": label, "latent": found.latent.tolist()} for label in labels]
        elif body.mode == "lookalikes":
            check_range(("body", "n"), body.n, 1, settings.max_n)
            check_seed_room(("body", "seed"), body.seed, body.n)
            seed = latents.choose_seed(body.seed, body.n)
            (found,) = await project(request, [image], [body.label], delivered=False)
            offsets = latents.latents_for_seeds(range(seed, seed + body.n), spec.latent_dim)
            z = (found.latent[None] + np.float32(body.spread) * offsets).astype(np.float32)
            kind, condition, columns = GraphKind.MAIN, np.full(body.n, found.label, np.int64), None
            rows = [
                {"seed": seed + i, "label": found.label, "latent": row.tolist()} for i, row in enumerate(z)
            ]
        else:
            if body.end_image is None:
                raise invalid(("body", "end_image"), "mode 'interpolate' needs a second image", None, RULE)
            check_range(("body", "steps"), body.steps, 2, settings.max_steps)
            end = read(("body", "end_image"), body.end_image, body.end_label)
            start, stop = await project(request, [image, end], [body.label, body.end_label], delivered=False)
            ts = latents.interpolation_steps(body.steps)
            z = (latents.slerp if body.method == "slerp" else latents.lerp)(start.latent, stop.latent, ts)
            z = np.asarray(z, dtype=np.float32)
            columns = body.steps
            if start.label == stop.label:
                kind, condition = GraphKind.MAIN, np.full(body.steps, start.label, np.int64)
                rows = [{"label": start.label, "latent": row.tolist()} for row in z]
            elif spec.label_morph is None:
                raise NotSupported(
                    f"the images are a {start.label} and a {stop.label}; walking between labels needs the "
                    f"label_morph graph, which model {spec.manifest.name!r} lacks"
                )
            else:
                eye = np.eye(classes, dtype=np.float32)
                t = ts.astype(np.float32)[:, None]
                kind, condition = GraphKind.LABEL_MORPH, ((1 - t) * eye[start.label] + t * eye[stop.label])
                condition = condition.astype(np.float32)
                rows = [
                    {"label_weights": w.tolist(), "latent": r.tolist()}
                    for w, r in zip(condition, z, strict=True)
                ]
        return await image_response(
            ctx,
            request,
            kind,
            z,
            condition,
            body.format,
            infos=lambda: rows,
            seed=seed,
            truncation=1.0,
            columns=columns,
        )

    return router

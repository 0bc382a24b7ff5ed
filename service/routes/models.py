"""``GET /v1/models``: what is served (the contract's fields, plus capabilities)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from contracts import native_latents
from service.routes.common import ServiceContext


class ModelCard(BaseModel):
    name: str
    version: str
    num_classes: int
    labels: list[str] = Field(description="Class names; label i is labels[i].")
    conditional: bool = Field(
        description="Whether the model takes a label. An unconditional one ignores labels: it generates "
        "without one, refuses label parameters (422), and /v1/bulk gives y = -1."
    )
    latent_dim: int
    image_shape: tuple[int, int, int] = Field(description="[H, W, C]")
    sha256: str = Field(description="sha256 of the served ONNX file.")
    variant: str | None = Field(None, description="The manifest variant served, when not the default graph.")
    label_interpolation: bool = Field(description="Whether /v1/interpolate/labels is available.")
    providers: list[str] = Field(
        description="ONNX Runtime execution providers the session really runs on (not the ones asked for)."
    )
    intra_op_threads: int | None = Field(
        None, description="ONNX Runtime threads per operator in this worker's session (null while starting)."
    )
    bulk_inference_streams: int | None = Field(
        None,
        description="Bulk batches this worker runs at once, each on its own inference thread (null while "
        "starting).",
    )
    interactive_batches: str | None = Field(
        None,
        description="Where this worker runs its batches of interactive work: `loop` (on its event loop, no "
        "hand-off; chosen where a worker has at most one core) or `thread` (an inference thread); null while "
        "starting.",
    )
    latent_sampler: str = Field(
        description="What draws the seed contract's latents in this worker: `native` (the compiled "
        "contracts._normals, without the interpreter lock) or `numpy` (the same values, slower; the install "
        "found no C compiler, or the module disagreed with NumPy at start-up)."
    )
    max_n: int = Field(description="Most images per /generate request.")
    sampling: str = Field(
        "latent",
        description="How the model samples: `latent` (a GAN or VAE: one latent per image) or "
        "`autoregressive` (pixel by pixel; the latent input is the sampling noise, one N(0, 1) draw per "
        "pixel).",
    )
    latent_space: bool = Field(
        True,
        description="Whether the model has a latent space: interpolation, arithmetic and projection/edit "
        "need one; an autoregressive model answers them 422 (generate, every-label and bulk still work).",
    )
    max_batch: int | None = Field(
        None,
        description="Most images per inference call in this worker's first stream, which runs interactive "
        "work (null while starting).",
    )
    bulk_max_batch: int | None = Field(
        None,
        description="Most images per batch of bulk work on this worker's further streams, and on its first "
        "once no interactive request has come for GAN_BULK_FIRST_STREAM_QUIET_S; max_batch without further "
        "streams (null while starting). A batch runs as calls of at most ort_call_max_rows.",
    )
    ort_call_max_rows: int | None = Field(
        None,
        description="Most images per ONNX Runtime call in this worker: a larger batch runs as several "
        "calls in a row on its inference thread (null: no limit, or while starting).",
    )


def build_router(ctx: ServiceContext) -> APIRouter:
    spec, settings = ctx.spec, ctx.settings
    router = APIRouter(tags=["models"])

    @router.get("/v1/models", summary="The served models")
    async def models() -> list[ModelCard]:
        m = spec.manifest
        batcher = ctx.lifecycle.batcher
        return [
            ModelCard(
                name=m.name,
                version=m.version,
                num_classes=m.num_classes,
                labels=m.labels,
                conditional=m.conditional,
                latent_dim=m.latent_dim,
                image_shape=m.image_shape,
                sha256=spec.main.sha256,
                variant=settings.model_variant,
                label_interpolation=spec.label_morph is not None and m.conditional,
                providers=batcher.runtime.providers if batcher is not None else [],
                intra_op_threads=batcher.runtime.intra_op_threads if batcher is not None else None,
                bulk_inference_streams=batcher.streams if batcher is not None else None,
                interactive_batches=None if batcher is None else ("loop" if batcher.on_loop else "thread"),
                latent_sampler=native_latents.SAMPLER,
                max_n=settings.max_n,
                sampling=m.sampling,
                latent_space=m.has_latent_space,
                max_batch=batcher.settings.max_batch if batcher is not None else None,
                bulk_max_batch=batcher.bulk_batch if batcher is not None else None,
                ort_call_max_rows=getattr(batcher.runtime, "call_max_rows", None)
                if batcher is not None
                else None,
            )
        ]

    return router

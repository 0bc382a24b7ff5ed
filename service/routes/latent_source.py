"""A latent given by a seed or spelled out, shared by interpolation and arithmetic requests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from contracts import latents
from service.config import Settings
from service.errors import invalid
from service.model_repo import ModelSpec
from service.routes.bounds import one_of
from service.routes.common import StrictBody

MAX_LATENT_DIM = 65536  # a static sanity bound; the model's latent_dim is checked per request


class LatentSource(StrictBody):
    model_config = ConfigDict(json_schema_extra=one_of({"seed": "integer"}, {"latent": "array"}))

    seed: int | None = Field(None, ge=0, le=latents.MAX_SEED, description="Use the latent of this seed ...")
    latent: list[float] | None = Field(
        None,
        min_length=1,
        max_length=MAX_LATENT_DIM,
        description="... or this explicit latent (latent_dim numbers; truncation does not apply).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> LatentSource:
        if (self.seed is None) == (self.latent is None):
            raise ValueError("give exactly one of seed or latent")
        return self


def resolve(
    source: LatentSource, loc: Sequence[str | int], spec: ModelSpec, settings: Settings, truncation: float
) -> np.ndarray:
    """The latent ``[latent_dim]`` a source stands for (seeds are truncated, explicit latents are not)."""
    if source.seed is not None:
        return latents.truncate(latents.latent_for_seed(source.seed, spec.latent_dim)[None], truncation)[0]
    values = source.latent or []
    if len(values) != spec.latent_dim:
        raise invalid(
            (*loc, "latent"),
            f"latent has {len(values)} numbers, the model takes {spec.latent_dim}",
            len(values),
            f"exactly {spec.latent_dim} numbers",
        )
    bound = settings.max_latent_abs
    if max(abs(v) for v in values) > bound:
        raise invalid(
            (*loc, "latent"),
            f"latent coordinates must lie within ±{bound:g}",
            None,
            f"{-bound:g} <= latent[i] <= {bound:g}",
        )
    return np.asarray(values, dtype=np.float32)

"""The framework ceiling: a FastAPI app whose ``POST /generate?label=K`` validates its query like the service
does and answers a fixed PNG, served by uvicorn the way ``gan-serve`` serves the service (same loop and HTTP
implementation, no uvicorn access log). Its req/s is the most any route on this stack can answer here.

    TRIVIAL_IMAGE_SHAPE=28,28,1 python -m loadtest.trivial_app --port 8001
"""

from __future__ import annotations

import argparse
import io
import os
from typing import Annotated

import numpy as np
import uvicorn
from fastapi import FastAPI, Query
from fastapi.responses import Response
from PIL import Image

SHAPE_ENV = "TRIVIAL_IMAGE_SHAPE"  # "H,W,C" of the canned answer (the served model's), default 28,28,1


def canned_png(shape: tuple[int, int, int]) -> bytes:
    """A random image of the model's shape: the same bytes on the wire as a real answer, nothing computed."""
    height, width, channels = shape
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def create_app() -> FastAPI:
    app = FastAPI(title="framework ceiling")
    shape = tuple(int(v) for v in os.environ.get(SHAPE_ENV, "28,28,1").split(","))
    body = canned_png(shape)  # type: ignore[arg-type]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/generate")
    async def generate(label: Annotated[int, Query(ge=0, le=1_000_000)]) -> Response:
        return Response(body, media_type="image/png", headers={"X-Seed": str(label)})

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    uvicorn.run(
        "loadtest.trivial_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()

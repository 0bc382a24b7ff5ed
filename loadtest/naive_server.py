"""The naive peer: the simplest server anyone would write around the same model, for ``gan-bench`` to measure
the service against. FastAPI with a sync route, which Starlette runs in its thread pool; each request draws
its latent by the contract's seed rule, makes one batch-1 ONNX Runtime call and encodes one PNG with
``Image.save``. No batching, no queue bound, no middleware; served by uvicorn the way ``gan-serve`` serves
the service (uvloop, httptools, no uvicorn access log).

ONNX Runtime gets one intra-op thread per call (``--intra-op-threads``): the concurrency comes from the thread
pool, and on a small machine more threads per call only spin (reports/bench/NOTES.md), so this is the
stronger naive peer, not a handicapped one.

    python -m loadtest.naive_server --model-dir models/mnist-cdcgan --port 8002

No ``from __future__ import annotations``: the label's bound is a closure value FastAPI must evaluate.
"""

import io
from typing import Annotated

import numpy as np
import uvicorn
from fastapi import FastAPI, Query
from fastapi.responses import Response
from PIL import Image

from contracts.latents import latent_for_seed
from loadtest.peer_model import PeerEnv, SeedQuery, open_peer_model, peer_args, request_seed

ENV = PeerEnv(model_dir="NAIVE_MODEL_DIR", threads="NAIVE_INTRA_OP_THREADS")


def create_app() -> FastAPI:
    model = open_peer_model(ENV)
    top = model.num_classes - 1
    app = FastAPI(title="naive peer")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/generate")
    def generate(
        label: Annotated[int, Query(ge=0, le=top)],
        seed: SeedQuery = None,
    ) -> Response:
        seed = request_seed(label, seed, model.num_classes)
        z = latent_for_seed(seed, model.latent_dim)[None]
        image = model.run(z, np.array([label], dtype=np.int64))[0]
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"X-Seed": str(seed)})

    return app


def main(argv: list[str] | None = None) -> None:
    args = peer_args(__doc__.split("\n\n")[0], 8002, ENV, argv)
    uvicorn.run(
        "loadtest.naive_server:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()

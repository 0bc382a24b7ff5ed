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

import argparse
import io
import os
import random
from pathlib import Path
from typing import Annotated

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Query
from fastapi.responses import Response
from PIL import Image

from contracts.latents import MAX_SEED, latent_for_seed
from contracts.model_dir import read_manifest, verified_graph

MODEL_DIR_ENV, THREADS_ENV = "NAIVE_MODEL_DIR", "NAIVE_INTRA_OP_THREADS"


def create_app() -> FastAPI:
    model_dir = Path(os.environ.get(MODEL_DIR_ENV, "models/mnist-cdcgan"))
    manifest = read_manifest(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get(THREADS_ENV, "1"))
    graph = verified_graph(model_dir, manifest.graph())
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    latent_name, label_name = manifest.inputs["latent"], manifest.inputs["label"]
    output, top = manifest.output.name, manifest.num_classes - 1
    app = FastAPI(title="naive peer")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/generate")
    def generate(
        label: Annotated[int, Query(ge=0, le=top)],
        seed: Annotated[int | None, Query(ge=0, le=MAX_SEED)] = None,
    ) -> Response:
        seed = random.randrange(MAX_SEED + 1) if seed is None else seed
        z = latent_for_seed(seed, manifest.latent_dim)[None]
        image = session.run([output], {latent_name: z, label_name: np.array([label], dtype=np.int64)})[0][0]
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"X-Seed": str(seed)})

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/mnist-cdcgan"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ[MODEL_DIR_ENV] = str(args.model_dir)
    os.environ[THREADS_ENV] = str(args.intra_op_threads)
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

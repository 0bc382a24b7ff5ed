"""The BentoML peer: the same model served by BentoML with its adaptive batching, for ``gan-bench`` to measure
the service against a third serving framework that batches by itself.

Same interface and work per answer as the other peers (``loadtest.naive_server``, ``loadtest.litserve_peer``,
``loadtest.ray_peer``) and the service: ``POST /generate?label=L&seed=S`` (seed optional, drawn when absent),
the latent by the contract's seed rule, one ONNX Runtime session on the CPU with one intra-op thread, the PNG
by ``service.encoding.png_bytes``, so the same seed answers the same bytes as ``gan-serve``.

BentoML's documented way to batch behind a route of one's own: a front service (``GanPeer``) with the route
on a FastAPI app mounted by ``bentoml.asgi_app``, calling a model service (``GanModel``, ``bentoml.depends``)
whose ``@bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=...)`` method BentoML's dispatcher
feeds with adaptive batches. One worker each; BentoML runs them as separate processes, children of the
process started here, which ``gan-bench``'s CPU and RSS readings include. Readiness: BentoML's ``/readyz``.

BentoML does not install against this project's pins (``loadtest/benchmark.py`` says why), so it runs from a
virtual environment of its own, whose interpreter ``GAN_BENCH_BENTOML_PYTHON`` names; the repository root goes
on its ``PYTHONPATH``. BentoML 1.4.30: from 1.4.31 (checked up to 1.4.40) the front service's calls to the
model service fail under load ("Server disconnected", then HTTP 500 or a reset connection for the client:
with 1.4.40, 659 failures beside 594 answers in 5 s at 64 clients; bentoml/BentoML#5540 reports the same
regression), while 1.4.30 answers every request.

    python3 -m venv /tmp/bentoml
    /tmp/bentoml/bin/pip install bentoml==1.4.30 fastapi onnxruntime pillow psutil
    GAN_BENCH_BENTOML_PYTHON=/tmp/bentoml/bin/python gan-bench ...
    $GAN_BENCH_BENTOML_PYTHON -m loadtest.bentoml_peer --model-dir models/mnist-cdcgan --port 8005   # alone
"""

from __future__ import annotations

import os
import sys

import bentoml
import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response

from contracts.latents import latent_for_seed
from contracts.model_dir import read_manifest
from loadtest.peer_model import (
    LabelQuery,
    PeerEnv,
    SeedQuery,
    open_peer_model,
    peer_args,
    peer_model_dir,
    request_seed,
)
from service.encoding import png_bytes

MAX_BATCH_SIZE = 64  # the service's max_batch
MAX_LATENCY_MS = 1000  # BentoML's latency goal for its dispatcher (its default is 60 s); not tuned
ENV = PeerEnv(model_dir="BENTOML_PEER_MODEL_DIR", threads="BENTOML_PEER_INTRA_OP_THREADS")
SERVICE = "loadtest.bentoml_peer:GanPeer"

app = FastAPI()


@bentoml.service(workers=1)
class GanModel:
    def __init__(self) -> None:
        self.model = open_peer_model(ENV)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def generate(self, rows: np.ndarray) -> np.ndarray:
        """Rows of ``[latent..., label]`` (one batchable input: BentoML batches along its first axis) →
        uint8 images."""
        return self.model.run(rows[:, :-1].astype(np.float32), rows[:, -1].astype(np.int64))


@bentoml.service(workers=1)
@bentoml.asgi_app(app)
class GanPeer:
    model = bentoml.depends(GanModel)

    def __init__(self) -> None:
        self.spec = read_manifest(peer_model_dir(ENV))  # the label bound and latent size: no model here

    @app.post("/generate")
    async def generate(
        self,
        label: LabelQuery,
        seed: SeedQuery = None,
    ) -> Response:
        seed = request_seed(label, seed, self.spec.num_classes)
        row = np.append(latent_for_seed(seed, self.spec.latent_dim), np.float32(label))[None]
        images = await self.model.to_async.generate(row)
        return Response(png_bytes(images[0]), media_type="image/png", headers={"X-Seed": str(seed)})


def main(argv: list[str] | None = None) -> None:
    args = peer_args("The BentoML peer of gan-bench.", 8005, ENV, argv)
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE]
    # BentoML's own server in this process (SIGTERM reaches it); its services read the model from the env
    os.execv(sys.executable, [*command, "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()

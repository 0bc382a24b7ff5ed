"""The LitServe peer: the same model served by LitServe (``ls.LitAPI`` + ``ls.LitServer``) with its native
batching, for ``gan-bench`` to measure the service against a serving framework that batches by itself.

Same interface and work per answer as the naive peer (``loadtest.naive_server``) and the service:
``POST /generate?label=L&seed=S`` (seed optional, drawn when absent), the latent by the contract's seed rule,
one ONNX Runtime session on the CPU with one intra-op thread (``--intra-op-threads``), the PNG by
``service.encoding.png_bytes``, so the same seed answers the same bytes as ``gan-serve``.

LitServe's settings (documented, not tuned): ``max_batch_size=64`` (the service's ``max_batch``) and
``batch_timeout=0.002`` s (LitServe waits at most 2 ms to fill a batch); one inference worker process
(``workers_per_device=1`` on ``accelerator="cpu"``) and one API server process. LitServe runs the model in
that worker process and the HTTP front end in another; both are children of the process started here, which
``gan-bench``'s CPU and RSS readings include. Readiness: LitServe's ``GET /health`` (200 once the worker
has run ``setup``).

The query string is read through a Pydantic model annotated ``Query()`` on ``decode_request``'s argument:
LitServe registers the route with that annotation, so FastAPI validates ``label`` (0..num_classes-1) and
``seed`` (0..MAX_SEED) and answers 422 otherwise, as the other peers do.

    python -m loadtest.litserve_peer --model-dir models/mnist-cdcgan --port 8003
"""

import os
import signal
from typing import Annotated

import litserve as ls
import numpy as np
from fastapi import Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from contracts.latents import MAX_SEED, latent_for_seed
from loadtest.peer_model import PeerEnv, open_peer_model, peer_args, request_seed
from service.encoding import png_bytes

MAX_BATCH_SIZE = 64  # the service's max_batch
BATCH_TIMEOUT_S = 0.002  # LitServe's longest wait to fill a batch
ENV = PeerEnv(model_dir="LITSERVE_PEER_MODEL_DIR", threads="LITSERVE_PEER_INTRA_OP_THREADS")


class GenerateQuery(BaseModel):
    """``POST /generate``'s query string; the label's upper bound is checked against the model in
    ``decode_request`` (it is not known when the class is made)."""

    label: int = Field(ge=0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)


class GanAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = open_peer_model(ENV)

    def decode_request(self, request: Annotated[GenerateQuery, Query()]) -> tuple[int, int, np.ndarray]:
        seed = request_seed(request.label, request.seed, self.model.num_classes)
        return request.label, seed, latent_for_seed(seed, self.model.latent_dim)

    def batch(self, inputs: list[tuple[int, int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        labels = np.array([label for label, _, _ in inputs], dtype=np.int64)
        return np.stack([z for _, _, z in inputs]), labels, [seed for _, seed, _ in inputs]

    def predict(self, x: tuple[np.ndarray, np.ndarray, list[int]]) -> list[tuple[int, np.ndarray]]:
        z, labels, seeds = x
        images = self.model.run(z, labels)
        return list(zip(seeds, images, strict=True))

    def unbatch(self, output: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
        return output

    def encode_response(self, output: tuple[int, np.ndarray]) -> Response:
        seed, image = output
        return Response(png_bytes(image), media_type="image/png", headers={"X-Seed": str(seed)})


def build_server() -> ls.LitServer:
    api = GanAPI(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, api_path="/generate")
    return ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)


def _stop_on_sigterm() -> None:
    """SIGTERM (how gan-bench stops its servers) as Ctrl+C in this process: LitServe then terminates its API
    server and inference worker processes; its own default would leave them running, orphaned. The processes
    it forks inherit the handler and take SIGTERM's default action instead."""
    main_pid = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> None:
    # the inference worker is a separate process: it reads the model settings from the environment
    args = peer_args(__doc__.split("\n\n")[0], 8003, ENV, argv)
    _stop_on_sigterm()
    build_server().run(
        host=args.host,
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
        access_log=False,
    )


if __name__ == "__main__":
    main()

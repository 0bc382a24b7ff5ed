"""The Ray Serve peer: the same model served by Ray Serve (a ``@serve.deployment`` with a FastAPI ingress)
with its native batching (``@serve.batch``), for ``gan-bench`` to measure the service against Ray Serve.

Same interface and work per answer as the naive peer (``loadtest.naive_server``) and the service:
``POST /generate?label=L&seed=S`` (seed optional, drawn when absent), the latent by the contract's seed rule,
one ONNX Runtime session on the CPU with one intra-op thread (``--intra-op-threads``), the PNG by
``service.encoding.png_bytes``, so the same seed answers the same bytes as ``gan-serve``.

Ray Serve's settings (documented, not tuned): ``@serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)``
(the service's ``max_batch``; Ray waits at most 2 ms to fill a batch); one replica (``num_replicas=1``,
``num_cpus=1``) with ``max_ongoing_requests=64``, the least Ray Serve asks for with that batch size
(``max_batch_size * max_concurrent_batches``; its default of 5 would cap every batch at 5). The replica runs
the batch on its event loop, as Ray's batching examples do. Ray runs in a local cluster of its own started
here: ``ray.init(num_cpus=1, include_dashboard=False)``, usage stats off; Ray Serve's HTTP proxy listens on
``--host``/``--port``. The GCS, the raylet and Ray's workers (the Serve controller, the proxy, the replica)
are children of the process started here, which ``gan-bench``'s CPU and RSS readings include.

Readiness: ``GET /healthz`` on the deployment's own FastAPI app (200 once the replica has opened the model and
the proxy routes to it; Ray Serve's ``/-/healthz`` answers before the replica is up). Stopping: SIGTERM (how
gan-bench stops its servers) or Ctrl+C runs ``serve.shutdown()`` and ``ray.shutdown()``, which stop the
replica, the proxy, the controller and the cluster's processes; a stop while ``ray.init`` is still starting
the cluster would leave Ray's agents running without their raylet, so whatever this process had started and
is still running after that is terminated (``loadtest.peer_model.stop_leftovers``).

Validation as the other peers: ``label`` 0..num_classes-1 and ``seed`` 0..MAX_SEED, 422 otherwise.

    python -m loadtest.ray_peer --model-dir models/mnist-cdcgan --port 8004
"""

import os
import signal
import threading
from pathlib import Path

import numpy as np
import psutil
import ray
from fastapi import FastAPI
from fastapi.responses import Response
from ray import serve

from contracts.latents import latent_for_seed
from loadtest.peer_model import (
    LabelQuery,
    PeerEnv,
    SeedQuery,
    open_peer_model,
    peer_args,
    request_seed,
    stop_leftovers,
)
from service.encoding import png_bytes

MAX_BATCH_SIZE = 64  # the service's max_batch
BATCH_WAIT_TIMEOUT_S = 0.002  # Ray Serve's longest wait to fill a batch
NUM_CPUS = 1  # the local Ray cluster's CPUs, all for the one replica
ENV = PeerEnv(model_dir="RAY_PEER_MODEL_DIR", threads="RAY_PEER_INTRA_OP_THREADS")

app = FastAPI()


@serve.deployment(
    num_replicas=1, max_ongoing_requests=MAX_BATCH_SIZE, ray_actor_options={"num_cpus": NUM_CPUS}
)
@serve.ingress(app)
class GanDeployment:
    def __init__(self) -> None:
        # the replica is a Ray worker: it reads the model settings from the environment the cluster inherited
        self.model = open_peer_model(ENV)

    @app.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/generate")
    async def generate(
        self,
        label: LabelQuery,
        seed: SeedQuery = None,
    ) -> Response:
        seed = request_seed(label, seed, self.model.num_classes)
        image = await self.run_batch((label, seed))
        return Response(png_bytes(image), media_type="image/png", headers={"X-Seed": str(seed)})

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def run_batch(self, requests: list[tuple[int, int]]) -> list[np.ndarray]:
        labels = np.array([label for label, _ in requests], dtype=np.int64)
        z = np.stack([latent_for_seed(seed, self.model.latent_dim) for _, seed in requests])
        return list(self.model.run(z, labels))


def main(argv: list[str] | None = None) -> None:
    args = peer_args(__doc__.split("\n\n")[0], 8004, ENV, argv)
    # Ray's workers need not start in this directory: the model directory as an absolute path
    os.environ[ENV.model_dir] = str(Path(os.environ[ENV.model_dir]).resolve())
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl+C
    try:
        # a SIGTERM in ray.init: Ray's own handler (sys.exit), then its core worker's, which ends this process
        # at once (no clean-up); so after it, Ctrl+C's again
        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(GanDeployment.bind(), route_prefix="/")
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        started = psutil.Process().children(recursive=True)
        try:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
        finally:
            # interrupted in ray.init, Ray leaves its agents running without their raylet
            stop_leftovers(started)


if __name__ == "__main__":
    main()

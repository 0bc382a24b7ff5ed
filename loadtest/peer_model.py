"""What the peers of ``gan-bench`` share (``loadtest.naive_server``, ``loadtest.litserve_peer``,
``loadtest.ray_peer``): their command line, handed to the server processes through the environment, the served
model as one CPU ONNX Runtime session with its input and output names, and the clean-up of processes a
framework leaves behind."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import onnxruntime as ort
import psutil
from fastapi import HTTPException, Query

from contracts.latents import MAX_SEED
from contracts.model_dir import read_manifest, verified_graph

DEFAULT_MODEL_DIR = Path("models/mnist-cdcgan")
# POST /generate's query parameters as the peers declare them (the label's upper bound, the model's, is
# checked by ``request_seed``)
LabelQuery = Annotated[int, Query(ge=0)]
SeedQuery = Annotated[int | None, Query(ge=0, le=MAX_SEED)]


@dataclass(frozen=True)
class PeerEnv:
    """The environment variables that carry a peer's ``--model-dir`` and ``--intra-op-threads`` to the
    process that opens the model (uvicorn's factory, LitServe's inference worker)."""

    model_dir: str
    threads: str


@dataclass(frozen=True)
class PeerModel:
    session: ort.InferenceSession
    latent_name: str
    label_name: str
    output: str
    num_classes: int
    latent_dim: int

    def run(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.latent_name: z, self.label_name: labels})[0]


def peer_args(description: str, port: int, env: PeerEnv, argv: list[str] | None) -> argparse.Namespace:
    """The peer's flags, parsed and put into ``env``'s variables."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ[env.model_dir] = str(args.model_dir)
    os.environ[env.threads] = str(args.intra_op_threads)
    return args


def request_seed(label: int, seed: int | None, num_classes: int) -> int:
    """The seed a peer draws with (a random one when the request names none), once ``label`` is known to be
    below ``num_classes`` (else 422, as the service answers)."""
    if label >= num_classes:
        raise HTTPException(422, f"label must be < {num_classes}")
    return random.randrange(MAX_SEED + 1) if seed is None else seed


def peer_model_dir(env: PeerEnv) -> Path:
    return Path(os.environ.get(env.model_dir, str(DEFAULT_MODEL_DIR)))


def open_peer_model(env: PeerEnv) -> PeerModel:
    """The model named by ``env``'s variables (verified against its manifest), on the CPU."""
    model_dir = peer_model_dir(env)
    manifest = read_manifest(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get(env.threads, "1"))
    graph = verified_graph(model_dir, manifest.graph())
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return PeerModel(
        session,
        manifest.inputs["latent"],
        manifest.inputs["label"],
        manifest.output.name,
        manifest.num_classes,
        manifest.latent_dim,
    )


def stop_leftovers(processes: list[psutil.Process], timeout_s: float = 5.0) -> None:
    """Terminate, then kill, those of ``processes`` (a peer's descendants, listed before its framework shut
    down) still running ``timeout_s`` after: a framework stopped while it starts can leave some orphaned."""
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()

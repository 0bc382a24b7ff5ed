"""ONNX Runtime sessions for a model directory: the last hop from a request to the model.

Not thread-safe by design: the batcher calls ``run`` from its single inference thread only.
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum

import numpy as np
import onnxruntime as ort

from contracts.model_dir import ModelDirError
from service.config import Settings
from service.model_repo import Graph, ModelSpec

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# One fixed cuDNN convolution algorithm (not a timing benchmark per shape), so a latent's pixels do not depend
# on the batch it ran in or on the run
PROVIDER_OPTIONS: dict[str, dict[str, str]] = {CUDA: {"cudnn_conv_algo_search": "DEFAULT"}}
# On this few cores a second intra-op thread spin-waits and slows every call (reports/bench/NOTES.md)
SINGLE_THREAD_MAX_CORES = 2


class GraphKind(StrEnum):
    MAIN = "main"  # (z, int64 label) -> image
    LABEL_MORPH = "label_morph"  # (z, float32 label weights) -> image


def choose_providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise ModelDirError(
            f"GAN_DEVICE=cuda but ONNX Runtime offers only {available} (install onnxruntime-gpu)"
        )
    if device == "cuda" or (device == "auto" and CUDA in available):
        return [CUDA, CPU]
    return [CPU]


def intra_op_threads(settings: Settings, cores: int | None = None) -> int:
    """``GAN_INTRA_OP_THREADS`` when set, else 1 on small machines and the cores shared among the workers."""
    if settings.intra_op_threads:
        return settings.intra_op_threads
    cores = cores if cores is not None else os.cpu_count() or 1
    if cores <= SINGLE_THREAD_MAX_CORES:
        return 1
    return max(1, cores // settings.workers)


class Runtime:
    def __init__(self, spec: ModelSpec, settings: Settings):
        self.spec = spec
        self.providers = choose_providers(settings.device)
        options = ort.SessionOptions()
        self.intra_op_threads = intra_op_threads(settings)
        options.intra_op_num_threads = self.intra_op_threads
        if self.intra_op_threads > 1:  # idle pool threads sleep instead of burning a core between calls
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = settings.inter_op_threads
        options.use_deterministic_compute = True  # the same latent gives the same bytes, whatever the batch
        options.log_severity_level = 3
        self._graphs: dict[GraphKind, tuple[Graph, ort.InferenceSession]] = {
            GraphKind.MAIN: (spec.main, self._session(spec.main, options))
        }
        if spec.label_morph is not None:
            morph = spec.label_morph
            self._graphs[GraphKind.LABEL_MORPH] = (morph, self._session(morph, options))

    @property
    def graphs(self) -> tuple[GraphKind, ...]:
        return tuple(self._graphs)

    def run(self, kind: GraphKind, z: np.ndarray, condition: np.ndarray) -> np.ndarray:
        """``z`` float32 [N, latent_dim], ``condition`` int64 labels [N] or float32 label weights [N, K]
        → uint8 images [N, H, W, C]."""
        graph, session = self._graphs[kind]
        return session.run([graph.output], {graph.latent_input: z, graph.condition_input: condition})[0]

    def _session(self, graph: Graph, options: ort.SessionOptions) -> ort.InferenceSession:
        try:
            providers = [(name, PROVIDER_OPTIONS.get(name, {})) for name in self.providers]
            session = ort.InferenceSession(str(graph.path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            raise ModelDirError(f"{graph.path}: ONNX Runtime cannot load it ({exc})") from exc
        self._check_signature(graph, session)
        log.info("loaded %s on %s", graph.path.name, session.get_providers()[0])
        return session

    def _check_signature(self, graph: Graph, session: ort.InferenceSession) -> None:
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        if set(inputs) != {graph.latent_input, graph.condition_input}:
            raise ModelDirError(
                f"{graph.path}: graph inputs are {sorted(inputs)}, the manifest names "
                f"{sorted([graph.latent_input, graph.condition_input])}"
            )
        if graph.output not in outputs:
            raise ModelDirError(f"{graph.path}: no output {graph.output!r} (outputs: {sorted(outputs)})")
        expected = list(self.spec.image_shape)
        shape = outputs[graph.output].shape
        if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != expected:
            raise ModelDirError(f"{graph.path}: output shape {shape}, the manifest implies [N, {expected}]")
        latent_shape = inputs[graph.latent_input].shape
        if len(latent_shape) != 2 or latent_shape[1] != self.spec.latent_dim:
            raise ModelDirError(
                f"{graph.path}: latent input shape {latent_shape}, manifest latent_dim is "
                f"{self.spec.latent_dim}"
            )

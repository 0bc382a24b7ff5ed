"""The model directory as the service loads it: which graph to run and the feed names it takes, verified.

The server is generic over the directory: shapes, label names and input names come from its manifest
(``contracts.model_dir``), never from code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contracts.model_dir import (
    LABEL_MORPH,
    LATENT_OUTPUT,
    MANIFEST_FILE,
    Manifest,
    ModelDirError,
    read_manifest,
    verified_graph,
)


@dataclass(frozen=True)
class Graph:
    """One ONNX graph to load: its verified path and the feed names it takes."""

    path: Path
    sha256: str
    latent_input: str
    condition_input: str  # int64 labels [N] (main graph) or float32 label weights [N, K] (label morph)
    output: str


@dataclass(frozen=True)
class ModelSpec:
    manifest: Manifest
    directory: Path
    main: Graph
    label_morph: Graph | None
    encoder: Graph | None = None  # (image, label) -> latent; its inputs fill latent_input, condition_input

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.manifest.image_shape

    @property
    def latent_dim(self) -> int:
        return self.manifest.latent_dim

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def conditional(self) -> bool:
        """False for a model trained without labels: its graph takes a ``label`` input and ignores it."""
        return self.manifest.conditional


def load_model_dir(directory: str | Path, variant: str | None = None, *, local: bool = True) -> ModelSpec:
    """Read and check a model directory; raises ``ModelDirError``: an unverified file is never served.
    ``local=False``: only manifest.json is read (a remote backend runs the graph; no label morph then)."""
    directory = Path(directory).resolve()
    manifest = read_manifest(directory)
    try:
        entry = manifest.graph(variant)
    except KeyError as exc:
        raise ModelDirError(f"{directory / MANIFEST_FILE}: {exc.args[0]}") from exc
    where = "file" if variant is None else f"variants.{variant}"
    main = Graph(
        verified_graph(directory, entry, where) if local else directory / entry.file,
        entry.sha256,
        manifest.inputs["latent"],
        manifest.inputs["label"],
        manifest.output.name,
    )
    morph = None
    if local and (morph_entry := manifest.extra_graphs.get(LABEL_MORPH)) is not None:
        inputs = morph_entry.inputs or {}
        morph = Graph(
            verified_graph(directory, morph_entry, f"extra_graphs.{LABEL_MORPH}"),
            morph_entry.sha256,
            inputs["latent"],
            inputs["label_weights"],
            manifest.output.name,
        )
    encoder = None
    if local and (entry := manifest.encoder) is not None:
        output = (entry.model_extra or {}).get("output", LATENT_OUTPUT)
        image, label = (entry.inputs or {})["image"], (entry.inputs or {})["label"]
        encoder = Graph(verified_graph(directory, entry, "encoder"), entry.sha256, image, label, output)
    return ModelSpec(manifest, directory, main, morph, encoder)

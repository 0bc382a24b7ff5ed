"""A model directory (docs/design.md): ``manifest.json`` plus the ONNX graphs it names, checked before use.

The server is generic over it: shapes, label names and input names come from here, never from code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MANIFEST_FILE = "manifest.json"
LABEL_MORPH = "label_morph"


class ModelError(RuntimeError):
    """The model directory cannot be served; the message names the file and what is wrong."""


class _GraphEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: dict[str, str] | None = None


class _Output(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    dtype: str
    layout: str

    @model_validator(mode="after")
    def _uint8_nhwc(self) -> _Output:
        if (self.dtype, self.layout) != ("uint8", "NHWC"):
            raise ValueError(f"output must be uint8 NHWC, got {self.dtype} {self.layout}")
        return self


class Manifest(BaseModel):
    """The fields of ``manifest.json`` the service reads (others are kept but not interpreted)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    num_classes: int = Field(ge=1)
    labels: list[str]
    latent_dim: int = Field(ge=1)
    image_shape: tuple[int, int, int]
    inputs: dict[str, str]
    output: _Output
    variants: dict[str, _GraphEntry] = Field(default_factory=dict)
    extra_graphs: dict[str, _GraphEntry] = Field(default_factory=dict)

    @field_validator("image_shape")
    @classmethod
    def _positive(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(shape) < 1:
            raise ValueError(f"image_shape must be positive [H, W, C], got {list(shape)}")
        return shape

    @field_validator("inputs")
    @classmethod
    def _latent_and_label(cls, inputs: dict[str, str]) -> dict[str, str]:
        if not {"latent", "label"} <= set(inputs):
            raise ValueError(f'inputs must name "latent" and "label", got {inputs}')
        return inputs

    @model_validator(mode="after")
    def _labels_match(self) -> Manifest:
        if len(self.labels) != self.num_classes:
            raise ValueError(f"labels has {len(self.labels)} names but num_classes is {self.num_classes}")
        morph = self.extra_graphs.get(LABEL_MORPH)
        if morph is not None and not {"latent", "label_weights"} <= set(morph.inputs or {}):
            raise ValueError('extra_graphs.label_morph.inputs must name "latent" and "label_weights"')
        return self


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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.manifest.image_shape

    @property
    def latent_dim(self) -> int:
        return self.manifest.latent_dim

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model_dir(directory: str | Path, variant: str | None = None) -> ModelSpec:
    """Read and check a model directory; raises ``ModelError`` (never serves a file it could not verify)."""
    directory = Path(directory).resolve()
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelError(f"{manifest_path} not found: is GAN_MODEL_DIR a model directory?")
    try:
        manifest = Manifest.model_validate(json.loads(manifest_path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{manifest_path}: not readable JSON ({exc})") from exc
    except ValidationError as exc:
        raise ModelError(f"{manifest_path}: invalid manifest:\n{exc}") from exc

    if variant is None:
        main_file, main_sha = manifest.file, manifest.sha256
    elif variant in manifest.variants:
        main_file, main_sha = manifest.variants[variant].file, manifest.variants[variant].sha256
    else:
        raise ModelError(f"{manifest_path}: no variant {variant!r}; variants are {sorted(manifest.variants)}")
    main = Graph(
        _verified_file(directory, main_file, main_sha),
        main_sha,
        manifest.inputs["latent"],
        manifest.inputs["label"],
        manifest.output.name,
    )
    morph = None
    if (entry := manifest.extra_graphs.get(LABEL_MORPH)) is not None:
        inputs = entry.inputs or {}
        morph = Graph(
            _verified_file(directory, entry.file, entry.sha256),
            entry.sha256,
            inputs["latent"],
            inputs["label_weights"],
            manifest.output.name,
        )
    return ModelSpec(manifest, directory, main, morph)


def _verified_file(directory: Path, name: str, expected_sha: str) -> Path:
    path = (directory / name).resolve()
    if not path.is_relative_to(directory):
        raise ModelError(f"{directory / MANIFEST_FILE}: file {name!r} lies outside the model directory")
    if not path.is_file():
        raise ModelError(f"{path} not found (named by {directory / MANIFEST_FILE})")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise ModelError(f"{path}: sha256 mismatch: manifest says {expected_sha}, file has {actual}")
    return path

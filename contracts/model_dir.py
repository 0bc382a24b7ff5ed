"""The model directory (docs/design.md): ``manifest.json`` plus the ONNX graphs it names.

``gan-export`` writes it, ``gan-serve`` serves it, ``gan-eval`` measures it, all through this module: one
``Manifest`` model, one reader that validates and sha256-verifies, one writer. Checking the graphs *inside*
the files against the manifest needs onnx and lives with the exporter (``export.graph_check``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.files import atomic_write_json, sha256_file

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
FP16_FILE = "model.fp16.onnx"
LABEL_MORPH_FILE = "label_morph.onnx"
ENCODER_FILE = "encoder.onnx"
SAMPLES_FILE = "samples.png"
CARD_FILE = "README.md"

LATENT_INPUT = "z"
LABEL_INPUT = "label"
LABEL_WEIGHTS_INPUT = "label_weights"
IMAGE_OUTPUT = "image"
OUTPUT_SPEC = {"name": IMAGE_OUTPUT, "dtype": "uint8", "layout": "NHWC", "range": [0, 255]}
LABEL_MORPH = "label_morph"  # the key of the optional label-mixing graph in ``extra_graphs``
# The optional encoder (GAN inversion): inputs image uint8 [N, H, W, C] and label int64 [N], output latent
# float32 [N, latent_dim]. Its manifest entry is ``encoder`` (absent: the model cannot project images).
IMAGE_INPUT = "image"
LATENT_OUTPUT = "latent"
# How the model samples (``sampling``): from a latent space (GANs, VAEs: the default, and every manifest
# written before the field existed) or pixel by pixel (``autoregressive``: the "latent" input is the sampling
# noise, one draw per pixel; the model has no latent space to interpolate, do arithmetic in or project into).
LATENT_SAMPLING = "latent"
AUTOREGRESSIVE_SAMPLING = "autoregressive"

# Written by gan-export beside the fields every reader needs; ``read_manifest(complete=True)`` requires them.
EXPORT_FIELDS = (
    "normalisation",
    "opset",
    "conditional",
    "training",
    "data_split",
    "verification",
    "metrics",
    "created",
)


class ModelDirError(ValueError):
    """The model directory cannot be used; the message names the file and what is wrong."""


def _file_name(name: str) -> str:
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"must be a file name inside the model directory, got {name!r}")
    return name


class GraphEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: dict[str, str] | None = None

    _plain_file = field_validator("file")(_file_name)


class Output(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    dtype: str
    layout: str
    range: list[int] = Field(default_factory=lambda: [0, 255])

    @model_validator(mode="after")
    def _uint8_nhwc(self) -> Output:
        fixed = {k: v for k, v in OUTPUT_SPEC.items() if k != "name"}
        if {"dtype": self.dtype, "layout": self.layout, "range": self.range} != fixed:
            raise ValueError(f"must be {fixed} with any name, got {self.dtype} {self.layout} {self.range}")
        return self


class Manifest(BaseModel):
    """``manifest.json``. Fields beyond these are kept as they are (``extra="allow"``)."""

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
    output: Output
    variants: dict[str, GraphEntry] = Field(default_factory=dict)
    extra_graphs: dict[str, GraphEntry] = Field(default_factory=dict)
    encoder: GraphEntry | None = None  # {"file", "sha256", "inputs": {"image", "label"}, "output", ...}
    sampling: Literal["latent", "autoregressive"] = LATENT_SAMPLING
    # an autoregressive model's levels, noise rule, held-out likelihood and serving hints ({"max_batch"})
    autoregressive: dict[str, Any] | None = None
    # Written by gan-export (EXPORT_FIELDS); optional for a reader.
    normalisation: dict[str, Any] | None = None
    opset: int | None = Field(None, ge=1)
    conditional: bool = True
    training: dict[str, Any] | None = None
    data_split: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    created: str | None = None

    _plain_file = field_validator("file")(_file_name)

    @field_validator("image_shape")
    @classmethod
    def _positive(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(shape) < 1:
            raise ValueError(f"must be positive [H, W, C], got {list(shape)}")
        return shape

    @field_validator("inputs")
    @classmethod
    def _latent_and_label(cls, inputs: dict[str, str]) -> dict[str, str]:
        if not {"latent", "label"} <= set(inputs):
            raise ValueError(f'must name "latent" and "label", got {inputs}')
        return inputs

    @model_validator(mode="after")
    def _labels_match(self) -> Manifest:
        if len(self.labels) != self.num_classes:
            raise ValueError(f"labels has {len(self.labels)} names but num_classes is {self.num_classes}")
        morph = self.extra_graphs.get(LABEL_MORPH)
        if morph is not None and not {"latent", "label_weights"} <= set(morph.inputs or {}):
            raise ValueError('extra_graphs.label_morph.inputs must name "latent" and "label_weights"')
        if self.encoder is not None and not {"image", "label"} <= set(self.encoder.inputs or {}):
            raise ValueError('encoder.inputs must name "image" and "label"')
        return self

    @property
    def has_latent_space(self) -> bool:
        """False for an autoregressive model: its latent input is sampling noise, not a space to move in."""
        return self.sampling == LATENT_SAMPLING

    @property
    def max_batch_hint(self) -> int | None:
        """The most images the exporter advises per inference call (an autoregressive model's sampling loop
        makes large batches slow), or None."""
        hint = ((self.autoregressive or {}).get("serving") or {}).get("max_batch")
        return int(hint) if isinstance(hint, int) and hint >= 1 else None

    def graph(self, variant: str | None = None) -> GraphEntry:
        """The main graph, or the named variant of it (``variants``)."""
        if variant is None:
            return GraphEntry(file=self.file, sha256=self.sha256)
        if variant not in self.variants:
            raise KeyError(f"no variant {variant!r}; variants are {sorted(self.variants)}")
        return self.variants[variant]

    def graph_entries(self) -> Iterator[tuple[str, GraphEntry]]:
        """Every graph the manifest names, with the field that names it."""
        yield "file", self.graph()
        for key, entry in self.variants.items():
            yield f"variants.{key}", entry
        for key, entry in self.extra_graphs.items():
            yield f"extra_graphs.{key}", entry
        if self.encoder is not None:
            yield "encoder", self.encoder


def parse_manifest(text: str | bytes, where: str | Path, *, complete: bool = False) -> Manifest:
    """Validate manifest JSON; ``complete`` also requires the fields gan-export writes (EXPORT_FIELDS)."""
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{where}: not readable JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelDirError(f"{where}: must hold a JSON object, got {type(raw).__name__}")
    try:
        manifest = Manifest.model_validate_json(json.dumps(raw), strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(part) for part in error['loc']) or '(top)'}': {error['msg']}"
            for error in exc.errors()
        )
        raise ModelDirError(f"{where}: invalid manifest: {problems}") from exc
    missing = [name for name in EXPORT_FIELDS if complete and name not in raw]
    if missing:
        raise ModelDirError(f"{where}: missing field(s) {missing}")
    return manifest


def read_manifest(directory: str | Path, *, complete: bool = False) -> Manifest:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ModelDirError(f"{path} not found: is it a model directory?")
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ModelDirError(f"{path}: not readable JSON ({exc})") from exc
    return parse_manifest(text, path, complete=complete)


def verified_graph(directory: str | Path, entry: GraphEntry, where: str = "file") -> Path:
    """The path of one graph the manifest names, once its sha256 matches."""
    path = Path(directory) / entry.file
    if not path.is_file():
        raise ModelDirError(f"{path} not found (named by {MANIFEST_FILE} '{where}')")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise ModelDirError(
            f"{path}: sha256 mismatch: manifest says {entry.sha256}, file has {actual} "
            "(corrupted or replaced file)"
        )
    return path


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Manifest:
    """Validate a complete manifest and write it as given (field order kept)."""
    text = json.dumps(manifest, indent=2) + "\n"
    parsed = parse_manifest(text, Path(directory) / MANIFEST_FILE, complete=True)
    atomic_write_json(Path(directory) / MANIFEST_FILE, manifest)
    return parsed

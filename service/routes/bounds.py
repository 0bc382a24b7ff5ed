"""What the served model and the settings allow, stated in the OpenAPI schema of the request bodies.

A body model (``service/routes/*.py``) is the same whatever model is served, and its routes check the bounds
that depend on the model (labels ``0..num_classes - 1``, ``latent_dim`` numbers in a latent) or on the
settings (``max_steps``, ``max_bulk_n``, ...) themselves, with messages naming the range. ``bounded`` gives a
route a subclass of its body model whose JSON schema states those bounds too, so a client generated from
``/openapi.json`` (or schemathesis) knows them; validation is unchanged. Rules between fields ("seed or
latent") are stated by the models themselves (``ONE_OF``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from service.config import Settings
from service.model_repo import ModelSpec

M = TypeVar("M", bound=BaseModel)
JsonDict = dict[str, Any]


def one_of(*branches: Mapping[str, str]) -> JsonDict:
    """A model-level ``oneOf``: each branch maps the fields it requires to their JSON type (a field that must
    be absent or null in it maps to ``"null"``)."""
    return {
        "oneOf": [
            {
                "required": [name for name, kind in branch.items() if kind != "null"],
                "properties": {name: {"type": kind} for name, kind in branch.items()},
            }
            for branch in branches
        ]
    }


def label_range(spec: ModelSpec) -> JsonDict:
    """The schema bounds of one label of the served model."""
    return {"minimum": 0, "maximum": spec.num_classes - 1}


def latent_bounds(spec: ModelSpec, settings: Settings) -> JsonDict:
    """The schema bounds of an explicit latent: ``latent_dim`` numbers within ``±max_latent_abs``."""
    bound = settings.max_latent_abs
    return {
        "minItems": spec.latent_dim,
        "maxItems": spec.latent_dim,
        "items": {"minimum": -bound, "maximum": bound},
    }


def bounded(model: type[M], fields: Mapping[str, JsonDict], **nested: Any) -> type[M]:
    """``model`` (same name, same validation) whose JSON schema merges ``fields[name]`` into each named
    field's schema (into the non-null branch of an optional field); ``nested`` replaces the model of a nested
    field (its annotation) by one of its own bounded models."""
    inherited = model.model_config.get("json_schema_extra")

    def state(schema: JsonDict, cls: type[BaseModel]) -> None:
        if callable(inherited):
            inherited(schema, cls)  # type: ignore[call-arg]
        elif inherited:
            schema.update(inherited)
        for name, extra in fields.items():
            _merge(_value_schema(schema["properties"][name]), extra)

    namespace: dict[str, Any] = {
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "__doc__": model.__doc__,
        "model_config": ConfigDict(json_schema_extra=state),
        "__annotations__": dict(nested),
    }
    for name in nested:
        namespace[name] = _copied(model.model_fields[name])
    return type(model.__name__, (model,), namespace)


def _copied(field: FieldInfo) -> FieldInfo:
    """A field of the parent model for the subclass (pydantic's own ``FieldInfo._copy`` is private and
    recent: not in the lowest pydantic allowed)."""
    copied = copy.copy(field)
    copied.metadata = list(field.metadata)
    return copied


def _value_schema(schema: JsonDict) -> JsonDict:
    """The part of a field's schema that describes a value: the non-null branch of ``T | None``."""
    for branch in schema.get("anyOf", ()):
        if branch.get("type") != "null":
            return branch
    return schema


def _merge(target: JsonDict, extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value

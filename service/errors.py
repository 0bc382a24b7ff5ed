"""Error answers: every bad input is a 4xx naming the field and its allowed range, overload is 429/503 with
``Retry-After``, a missed deadline is 504 (with ``Retry-After`` too). Routes raise; the handlers here write
the JSON bodies."""

from __future__ import annotations

import enum
import functools
import json
import sys
import typing
from collections.abc import Sequence
from typing import Any

import annotated_types as at
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.latents import MAX_SEED
from service.batcher import DeadlineExceeded, NeverFits, QueueFull, Unavailable

MAX_ECHO = 200  # characters of a bad input echoed back in a 422
MAX_NAME = 60  # characters of an unknown parameter's name echoed back (in its loc and its message)
CLIENT_CLOSED = 499  # nginx's "client closed request": the answer nobody reads, still counted in metrics


class ClientDisconnected(Exception):
    """The client went away before its answer was ready; its queued work was dropped."""


class NotSupported(Exception):
    """The served model lacks a capability the request needs (501)."""


def invalid(loc: Sequence[str | int], message: str, value: Any, allowed: str) -> RequestValidationError:
    """A 422 in FastAPI's own format, for checks that depend on the model or the settings."""
    return RequestValidationError(
        [{"type": "value_error", "loc": tuple(loc), "msg": message, "input": value, "allowed": allowed}]
    )


def labels_ignored(
    model: str, *fields: tuple[Sequence[str | int], Any], allowed: str | None = None
) -> RequestValidationError:
    """A 422 for each ``(loc, value)`` that names labels, sent to an unconditional model: it ignores labels,
    so images said to be "under" one would be mislabelled. ``allowed`` defaults to leaving the field out."""
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": tuple(loc),
                "msg": f"model {model!r} is unconditional: it ignores labels, so {_name(loc)} is refused "
                "rather than silently ignored",
                "input": value,
                "allowed": allowed or f"leave {_name(loc)} out for an unconditional model",
            }
            for loc, value in fields
        ]
    )


def no_latent_space(model: str, what: str) -> RequestValidationError:
    """The 422 of a latent-space route (``what``: interpolation, arithmetic, projection) sent to an
    autoregressive model: its latent input is the sampling noise, one draw per pixel, not a space to move
    in."""
    return invalid(
        ("body",),
        f"model {model!r} is autoregressive: it has no latent space, so {what} does not apply (its latent "
        "input is sampling noise, one draw per pixel)",
        None,
        "none: a model with a latent space (`latent_space` in /v1/models); /generate, /v1/generate, "
        "/v1/every-label and /v1/bulk work",
    )


def check_range(loc: Sequence[str | int], value: int | float, low: int | float, high: int | float) -> None:
    if not low <= value <= high:
        name = _name(loc)
        raise invalid(loc, f"{name} is {value}, out of range", value, f"{low} <= {name} <= {high}")


def check_seed_room(loc: Sequence[str | int], seed: int | None, count: int) -> None:
    """A given ``seed`` leaves room for the request's ``count`` consecutive seeds (image i uses seed + i), so
    that every image's seed is one a request may name (``MAX_SEED`` at most)."""
    if seed is not None and seed + count - 1 > MAX_SEED:
        highest = MAX_SEED - count + 1
        raise invalid(
            loc,
            f"image i uses seed + i: {count} images from seed {seed} would go past {MAX_SEED}",
            seed,
            f"0 <= seed <= {highest} for {count} images",
        )


def check_count(loc: Sequence[str | int], count: int, most: int) -> None:
    if count > most:
        raise invalid(
            loc, f"{loc[-1]} has {count} items, at most {most} allowed", count, f"at most {most} items"
        )


def check_images(loc: Sequence[str | int], images: int, queue_images: int) -> None:
    """A request of more images than the queue holds could never run: refused at once (422), never a 429
    that a client would retry forever."""
    if images > queue_images:
        raise invalid(loc, never_fits(images, queue_images), images, f"at most {queue_images} images")


def never_fits(images: int, queue_images: int) -> str:
    return (
        f"the request makes {images} images, more than the server's queue holds ({queue_images}, "
        "GAN_MAX_QUEUE_IMAGES): it could never run; ask for fewer images in one request"
    )


def query_misfits(
    items: Sequence[tuple[str, str]], names: Sequence[str], *, body: bool = False
) -> list[dict[str, Any]]:
    """Errors for each query parameter not in ``names`` and each one given more than once (the route reads
    one value: which would silently win?). ``body``: the route takes its parameters in a JSON body."""
    allowed = (
        "none: this route takes its parameters in a JSON body"
        if body
        else "each at most once, one of " + ", ".join(names)
    )
    found: list[dict[str, Any]] = []
    values: dict[str, list[str]] = {}
    for name, value in items:
        values.setdefault(name, []).append(value)
    for name, given in values.items():
        shown = name if len(name) <= MAX_NAME else name[:MAX_NAME] + "..."  # cut, as every echo is
        if name not in names:
            message = f"unknown query parameter {shown!r}" + (" (put it in the JSON body)" if body else "")
            found.append({"type": "extra_forbidden", "loc": ("query", shown), "msg": message})
        elif len(given) > 1:
            message = f"query parameter {shown!r} is given {len(given)} times; give it once"
            found.append({"type": "value_error", "loc": ("query", shown), "msg": message})
        else:
            continue
        found[-1] |= {"input": given[0] if len(given) == 1 else given, "allowed": allowed}
    return found


def query_number(model: type[BaseModel], name: str, value: str, plain: str) -> dict[str, Any]:
    """The error for a query number written so that it would be read as another (``plain``: what to write)."""
    item = {
        "type": "int_parsing" if "integer" in plain else "float_parsing",
        "loc": ("query", name),
        "msg": f"{value!r} is not {plain}: write digits only (no underscores, spaces or + sign"
        + (", and no decimal point)" if "integer" in plain else ")"),
        "input": value,
    }
    field = model.model_fields.get(name)
    if field is not None and (allowed := _allowed(field, name)):
        item["allowed"] = allowed
    return item


def query_invalid(model: type[BaseModel], exc: ValidationError) -> RequestValidationError:
    """``exc`` from validating a query string with ``model``, in the form FastAPI gives bad ``Query``
    parameters (``loc`` starts with ``"query"``, a missing one has no input) plus each field's range."""
    found = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        item = {**error, "loc": ("query", *error["loc"])}
        if error["type"] == "missing":
            item["input"] = None
        field = model.model_fields.get(name)
        if field is not None and (allowed := _allowed(field, name)):
            item["allowed"] = allowed
        found.append(item)
    return RequestValidationError(found)


def install(app: FastAPI, retry_after_s: int) -> None:
    retry = {"Retry-After": str(retry_after_s)}

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_describe(request, _explain_body(request, dict(error), exc.body)) for error in exc.errors()]
        summary = "; ".join(
            f"{_name(e['loc'])}: {e['msg']}" + (f" (allowed: {e['allowed']})" if e.get("allowed") else "")
            for e in errors
        )
        return JSONResponse({"error": summary, "detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in {204, 304}:
            return Response(status_code=exc.status_code, headers=exc.headers)
        message = str(exc.detail)
        if exc.status_code == 400 and isinstance(cause := exc.__cause__, UnicodeDecodeError):
            message = (  # FastAPI's "There was an error parsing the body" for a body JSON cannot decode
                f"the body is not UTF-8 text, as JSON must be: {cause.reason} (byte "
                f"{cause.object[cause.start : cause.start + 1]!r} at position {cause.start})"
            )
        elif exc.status_code == 400 and isinstance(cause, RecursionError):
            message = "the body's JSON is nested too deeply to read: send a flatter JSON object"
        elif exc.status_code == 400 and isinstance(cause, ValueError) and "digits" in str(cause):
            message = (  # Python's limit on reading decimal integers
                f"the body's JSON has an integer of more than {sys.get_int_max_str_digits()} digits; "
                "no field takes such a number"
            )
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"error": f"server saturated: {exc}"}, status_code=429, headers=retry)

    @app.exception_handler(NeverFits)
    async def _never_fits(request: Request, exc: NeverFits) -> JSONResponse:
        message = never_fits(exc.images, exc.queue_images)
        error = {"type": "value_error", "loc": ["body"], "msg": message, "input": exc.images}
        error["allowed"] = f"at most {exc.queue_images} images"
        return JSONResponse({"error": f"request: {message}", "detail": [error]}, status_code=422)

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"error": f"service unavailable: {exc}"}, status_code=503, headers=retry)

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        return JSONResponse({"error": f"deadline exceeded: {exc}"}, status_code=504, headers=retry)

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(NotSupported)
    async def _not_supported(request: Request, exc: NotSupported) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=501)


def _name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"query", "body", "header", "path"}:
        parts = parts[1:]
    return ".".join(parts) or "request"


def _explain_body(request: Request, error: dict, body: Any) -> dict:
    """FastAPI's errors about the body as a whole, rewritten to say what to do: "Input should be a valid
    dictionary" for a body sent without ``Content-Type: application/json`` (then read as bytes) or one that
    is not a JSON object, and "JSON decode error" (with the position as a field name) for invalid JSON."""
    kind, loc = error.get("type"), tuple(error.get("loc", ()))
    if kind == "json_invalid" and loc[:1] == ("body",):
        position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        reason = str((error.get("ctx") or {}).get("error", "invalid JSON")).removesuffix(" at")
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        where = f"{reason} at position {position}" if position is not None else reason
        end = len(text.rstrip())
        # cut short: the error is at the very end, or in a string that never closes
        if (position is not None and position >= end) or reason.startswith("Unterminated string"):
            message = f"the body is not complete JSON: it ends at position {end} ({where}); was it cut short?"
        else:
            message = f"the body is not valid JSON: {where}"
        return {
            "type": kind,
            "loc": ("body",),
            "msg": message,
            "input": text[max(0, (position or 0) - 20) : (position or 0) + 20],
            "ctx": {"error": reason, "position": position},
            "allowed": "a complete JSON object",
        }
    if kind in {"model_attributes_type", "missing"} and loc == ("body",):
        value = error.get("input")
        if kind == "missing":
            message = "the request needs a JSON object as its body, sent with Content-Type: application/json"
        elif isinstance(value, bytes):  # FastAPI reads a body as JSON only when its Content-Type says so
            content_type = request.headers.get("content-type")
            got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
            message = f"the body was not read as JSON ({got}): send Content-Type: application/json"
        else:
            message = f"the body must be a JSON object ({{...}}), not {_json_kind(value)}"
        return {**error, "msg": message, "allowed": "a JSON object, with Content-Type: application/json"}
    return error


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


# strict bodies refuse coercions: say what to write instead
_STRICT_HINTS = {
    "int_type": "a JSON integer such as 7",
    "bool_type": "true or false",
    "float_type": "a JSON number such as 0.5",
    "string_type": "a JSON string",
}


def _describe(request: Request, error: dict) -> dict:
    """Add ``allowed`` (the valid range or choices of the field) to one pydantic/FastAPI error."""
    if (hint := _STRICT_HINTS.get(error.get("type", ""))) and "input" in error:
        error["msg"] = f"{error['msg']}: write {hint}, not {_echo_text(error['input'])}"
    if "input" in error:
        error["input"] = _echo(error["input"])
    if "ctx" in error:  # may hold exception objects
        error["ctx"] = {k: v if isinstance(v, int | float | str) else str(v) for k, v in error["ctx"].items()}
    loc = tuple(error.get("loc", ()))
    if error.get("allowed") or not loc:
        return error
    name = _name(loc) if len(loc) > 2 else str(loc[-1])  # counts.3, not 3
    allowed = _schema_range(request, loc, name)
    field = _field_for(request, loc) if not isinstance(loc[-1], int) else None  # a list's, not an item's
    if allowed or (field is not None and (allowed := _allowed(field, name))):
        error["allowed"] = allowed
    return error


def _echo(value: Any) -> Any:
    """The bad input as JSON can carry it: short, and never NaN/infinity (which JSON cannot encode)."""
    try:
        text = json.dumps(jsonable_encoder(value), allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)[:MAX_ECHO]
    return value if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def _echo_text(value: Any, most: int = 60) -> str:
    """The bad input as JSON text (``"1"`` for a string, ``7.0``, ``0``), cut to ``most`` characters."""
    try:
        text = json.dumps(jsonable_encoder(value), allow_nan=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= most else text[:most] + "..."


def _field_for(request: Request, loc: tuple) -> FieldInfo | None:
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or len(loc) < 2:
        return None
    where, name = loc[0], loc[1]
    if where in {"query", "header", "path"}:
        params = {
            "query": dependant.query_params,
            "header": dependant.header_params,
            "path": dependant.path_params,
        }
        for param in params[where]:
            if name in {param.name, param.alias}:
                return param.field_info
        return None
    body = getattr(route, "body_field", None)
    if where != "body" or body is None:
        return None
    model = body.field_info.annotation
    field = None
    for part in loc[1:]:
        if isinstance(part, int):
            continue
        model = _model_of(field.annotation) if field is not None else model
        if model is None or part not in model.model_fields:
            return None
        field = model.model_fields[part]
    return field


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[Term] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _model_of(arg)) is not None:
            return found
    return None


@functools.cache
def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _schema_at(request: Request, loc: Sequence[Any]) -> dict[str, Any] | None:
    """The part of the route's body schema (as ``/openapi.json`` states it) that describes ``loc``."""
    body = getattr(request.scope.get("route"), "body_field", None)
    model = body.field_info.annotation if body is not None else None
    if not loc or loc[0] != "body" or not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    root = _body_schema(model)
    schema: Any = root
    for part in loc[1:]:
        schema = _resolved(root, schema)
        if isinstance(part, str) and part in schema.get("properties", {}):
            schema = schema["properties"][part]
        elif isinstance(part, str) and isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        elif isinstance(part, int) and isinstance(schema.get("items"), dict):
            schema = schema["items"]
        else:
            return None
    return _resolved(root, schema)


def _schema_range(request: Request, loc: tuple, name: str) -> str | None:
    """The numeric or size range the route's body schema states for the field at ``loc``: the bounds that
    ``service.routes.bounds.bounded`` adds from the model and the settings (``n <= max_bulk_n``), with the
    field's own, where its metadata alone would give one end. For a field the body lacks: the ones it has."""
    if len(loc) < 2:
        return None
    parent = _schema_at(request, loc[:-1])
    if parent is not None and "properties" in parent and loc[-1] not in parent["properties"]:
        return "one of the fields " + ", ".join(parent["properties"])
    schema = _schema_at(request, loc)
    if schema is None:
        return None
    low = (
        f"{schema['minimum']} <= "
        if "minimum" in schema
        else f"{schema['exclusiveMinimum']} < "
        if "exclusiveMinimum" in schema
        else ""
    )
    high = (
        f" <= {schema['maximum']}"
        if "maximum" in schema
        else f" < {schema['exclusiveMaximum']}"
        if "exclusiveMaximum" in schema
        else ""
    )
    if low and high:  # one end alone is what the field's metadata says already
        return f"{low}{name}{high}"
    if "minItems" in schema and "maxItems" in schema:
        return f"{schema['minItems']} to {schema['maxItems']} item(s)"
    return None


def _resolved(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a ``$ref`` followed and an optional's non-null branch taken."""
    if "$ref" in schema:
        schema = root.get("$defs", {}).get(schema["$ref"].rsplit("/", 1)[-1], {})
    for branch in schema.get("anyOf", ()):
        if branch.get("type") != "null":
            return _resolved(root, branch)
    return schema


def _allowed(field: FieldInfo, name: str) -> str | None:
    low = high = None
    for item in field.metadata:
        if isinstance(item, at.Ge):
            low = f"{item.ge} <= "
        elif isinstance(item, at.Gt):
            low = f"{item.gt} < "
        elif isinstance(item, at.Le):
            high = f" <= {item.le}"
        elif isinstance(item, at.Lt):
            high = f" < {item.lt}"
        elif isinstance(item, at.MaxLen):
            return f"at most {item.max_length} item(s)"
        elif isinstance(item, at.MinLen):
            return f"at least {item.min_length} item(s)"
    if low or high:
        return f"{low or ''}{name}{high or ''}"
    annotation = field.annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return "one of " + ", ".join(str(m.value) for m in candidate)
        if typing.get_origin(candidate) is typing.Literal:
            return "one of " + ", ".join(str(v) for v in typing.get_args(candidate))
    return None

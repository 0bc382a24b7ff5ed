"""Error answers: every bad input is a 4xx naming the field and its allowed range, overload is 429/503 with
``Retry-After``, a missed deadline is 504. Routes raise; the handlers here write the JSON bodies."""

from __future__ import annotations

import enum
import json
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

from service.batcher import DeadlineExceeded, QueueFull, Unavailable

MAX_ECHO = 200  # characters of a bad input echoed back in a 422
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


def check_range(loc: Sequence[str | int], value: int | float, low: int | float, high: int | float) -> None:
    if not low <= value <= high:
        name = _name(loc)
        raise invalid(loc, f"{name} is {value}, out of range", value, f"{low} <= {name} <= {high}")


def check_count(loc: Sequence[str | int], count: int, most: int) -> None:
    if count > most:
        raise invalid(
            loc, f"{loc[-1]} has {count} items, at most {most} allowed", count, f"at most {most} items"
        )


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
        errors = [_describe(request, dict(error)) for error in exc.errors()]
        summary = "; ".join(
            f"{_name(e['loc'])}: {e['msg']}" + (f" (allowed: {e['allowed']})" if e.get("allowed") else "")
            for e in errors
        )
        return JSONResponse({"error": summary, "detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in {204, 304}:
            return Response(status_code=exc.status_code, headers=exc.headers)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"error": f"server saturated: {exc}"}, status_code=429, headers=retry)

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"error": f"service unavailable: {exc}"}, status_code=503, headers=retry)

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        return JSONResponse({"error": f"deadline exceeded: {exc}"}, status_code=504)

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


def _describe(request: Request, error: dict) -> dict:
    """Add ``allowed`` (the valid range or choices of the field) to one pydantic/FastAPI error."""
    if "input" in error:
        error["input"] = _echo(error["input"])
    if "ctx" in error:  # may hold exception objects
        error["ctx"] = {k: v if isinstance(v, int | float | str) else str(v) for k, v in error["ctx"].items()}
    if error.get("allowed"):
        return error
    field = _field_for(request, tuple(error.get("loc", ())))
    if field is not None and (allowed := _allowed(field, str(error["loc"][-1]))):
        error["allowed"] = allowed
    return error


def _echo(value: Any) -> Any:
    """The bad input as JSON can carry it: short, and never NaN/infinity (which JSON cannot encode)."""
    try:
        text = json.dumps(jsonable_encoder(value), allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)[:MAX_ECHO]
    return value if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


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

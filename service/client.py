"""A small synchronous client for every endpoint of the service (httpx + numpy; no torch).

    with GanClient("http://localhost:8000") as client:
        digits = client.generate(7, n=16, seed=1).array()          # uint8 [16, 28, 28]
        found = client.project("digit.png")                          # latent, label, reconstruction
        restyled = client.edit("digit.png").array()                  # the same handwriting as 0..9
        x, y = client.bulk(n=10_000, weights={3: 1, 8: 1}, seed=0)  # labelled synthetic data

An unconditional model (``conditional`` false in ``models()``) takes no label: ``generate(n=16)``,
``interpolate(1, 2)``, ``bulk(n)`` (whose ``y`` is -1 for every image).

Transient failures are retried, up to ``retries`` times: answers 429, 502, 503 and 504, and connection
errors (refused, reset, closed before an answer, connect timeout). Each wait is a jittered exponential
backoff (``backoff`` × 2^attempt, at most ``max_backoff``, times a random factor in [0.5, 1]) on top of the
answer's ``Retry-After``, which is honoured up to ``max_retry_after`` seconds. A retry is the same request:
where the server would choose a seed, the client chooses it before the first attempt, so a retried request
returns the images the first would have. A read timeout is not retried (the server may still be working:
its own deadline answers 504); other errors raise ``ServiceError`` with the server's message.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from contracts.latents import choose_seed

RETRYABLE = {429, 502, 503, 504}
# failures before any answer: the request can safely be sent again (a ReadTimeout is not among them)
RETRYABLE_ERRORS = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout, httpx.PoolTimeout)
REQUEST_ID = "X-Request-ID"
ImageInput = bytes | np.ndarray | str | Path  # PNG or .npy bytes, a path to such a file, or a uint8 array


class ServiceError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Result:
    """One image response: the body as sent plus the seed and request id the server returned."""

    content: bytes
    media_type: str
    seed: int | None
    request_id: str | None

    def array(self) -> np.ndarray:
        """The images of a ``format="npy"`` response: uint8 ``[n, H, W]`` or ``[n, H, W, C]``."""
        return np.load(io.BytesIO(self.content), allow_pickle=False)

    def json(self) -> dict:
        return json.loads(self.content)


class GanClient:
    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        *,
        api_key: str | None = None,
        api_key_header: str = "X-API-Key",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        max_retry_after: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """``rng`` (backoff jitter and the seeds the client chooses) and ``sleep`` are for tests."""
        if retries < 0 or backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ValueError("retries, backoff, max_backoff and max_retry_after must be >= 0")
        headers = {api_key_header: api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.max_retry_after = max_retry_after
        self._rng = rng or random.Random()
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- generation

    def generate(
        self,
        label: int | None = None,
        n: int = 1,
        *,
        seed: int | None = None,
        truncation: float = 1.0,
        format: str = "npy",
    ) -> Result:
        """``label`` None: for an unconditional model (a conditional one requires it)."""
        seed = self._seed(seed, n)
        params = {"label": label, "n": n, "truncation": truncation, "format": format, "seed": seed}
        return self._images("/generate", params={k: v for k, v in params.items() if v is not None})

    def generate_labels(
        self,
        labels: Sequence[int],
        *,
        seed: int | None = None,
        same_latent: bool = False,
        truncation: float = 1.0,
        format: str = "npy",
        columns: int | None = None,
    ) -> Result:
        labels = list(labels)
        body = {
            "labels": labels,
            "seed": self._seed(seed, 1 if same_latent else len(labels)),
            "same_latent": same_latent,
            "truncation": truncation,
            "format": format,
            "columns": columns,
        }
        return self._images("/v1/generate", json=body)

    def interpolate(
        self,
        start: int | Sequence[float],
        end: int | Sequence[float],
        label: int | None = None,
        *,
        steps: int = 8,
        method: str = "slerp",
        truncation: float = 1.0,
        format: str = "npy",
    ) -> Result:
        """From ``start`` to ``end`` (each a seed or an explicit latent) under ``label`` (None: for an
        unconditional model)."""
        body = {
            "start": _source(start),
            "end": _source(end),
            "label": label,
            "steps": steps,
            "method": method,
            "truncation": truncation,
            "format": format,
        }
        return self._images("/v1/interpolate", json=body)

    def interpolate_labels(
        self,
        latent: int | Sequence[float],
        start_label: int,
        end_label: int,
        *,
        steps: int = 8,
        truncation: float = 1.0,
        format: str = "npy",
    ) -> Result:
        body = {
            **_source(latent),
            "start_label": start_label,
            "end_label": end_label,
            "steps": steps,
            "truncation": truncation,
            "format": format,
        }
        return self._images("/v1/interpolate/labels", json=body)

    def arithmetic(
        self,
        terms: Sequence[tuple[float, Sequence[int]]],
        *,
        labels: Sequence[int] | None = None,
        show_terms: bool = False,
        truncation: float = 1.0,
        format: str = "npy",
    ) -> Result:
        """``terms`` is ``[(weight, seeds), ...]``: the sum of each weight times its seeds' mean latent."""
        body = {
            "terms": [{"weight": w, "seeds": list(seeds)} for w, seeds in terms],
            "labels": list(labels) if labels is not None else None,
            "show_terms": show_terms,
            "truncation": truncation,
            "format": format,
        }
        return self._images("/v1/arithmetic", json=body)

    def every_label(
        self, latent: int | Sequence[float], *, truncation: float = 1.0, format: str = "npy"
    ) -> Result:
        return self._images(
            "/v1/every-label", json={**_source(latent), "truncation": truncation, "format": format}
        )

    def project(self, image: ImageInput, label: int | None = None) -> dict[str, Any]:
        """The latent of a real image (PNG or ``.npy`` bytes, a path to such a file, or a uint8 array
        ``[H, W]`` / ``[H, W, C]``): ``label`` (chosen by the server when None), ``latent``, ``error``, and
        base64 PNGs of the input as the model saw it and of the reconstruction."""
        body = {"image": _image(image), "label": label}
        return self._request(
            "POST", "/v1/project", json={k: v for k, v in body.items() if v is not None}
        ).json()

    def edit(
        self,
        image: ImageInput,
        label: int | None = None,
        *,
        mode: str = "restyle",
        labels: Sequence[int] | None = None,
        end_image: ImageInput | None = None,
        end_label: int | None = None,
        steps: int = 8,
        method: str = "slerp",
        n: int = 8,
        spread: float = 0.5,
        seed: int | None = None,
        format: str = "npy",
    ) -> Result:
        """Project ``image``, then re-generate (``mode``): ``restyle`` (the same handwriting under ``labels``,
        default all), ``interpolate`` (to ``end_image`` in ``steps``), ``lookalikes`` (``n`` latents near it,
        ``spread``, ``seed``)."""
        body: dict[str, Any] = {"image": _image(image), "label": label, "mode": mode, "format": format}
        if mode == "restyle":
            body["labels"] = list(labels) if labels is not None else None
        elif mode == "interpolate":
            body |= {"end_label": end_label, "steps": steps, "method": method}
            body["end_image"] = _image(end_image) if end_image is not None else None
        elif mode == "lookalikes":
            body |= {"n": n, "spread": spread, "seed": self._seed(seed, n)}
        return self._images("/v1/edit", json=body)

    def bulk(
        self,
        n: int | None = None,
        *,
        counts: Mapping[int, int] | None = None,
        weights: Mapping[int, float] | None = None,
        seed: int | None = None,
        truncation: float = 1.0,
        shuffle: bool = True,
        path: str | Path | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``: uint8 images and int64 labels (-1 for every image of an unconditional model). The
        ``.npz`` is streamed to ``path`` (kept) or to a temporary file, so the download never sits in memory
        twice."""
        total = n if n is not None else sum(counts.values()) if counts is not None else 1
        body = {
            "n": n,
            "counts": _keys(counts),
            "weights": _keys(weights),
            "seed": self._seed(seed, max(1, total)),
            "truncation": truncation,
            "shuffle": shuffle,
        }
        body = {k: v for k, v in body.items() if v is not None}
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(path) if path is not None else Path(tmp) / "bulk.npz"

            def download(response: httpx.Response) -> None:  # a broken stream is retried from the start
                with target.open("wb") as out:
                    for block in response.iter_bytes():
                        out.write(block)

            self._send("POST", "/v1/bulk", download, json=body)
            with np.load(target, allow_pickle=False) as archive:
                return archive["x"], archive["y"]

    # --- model and operations

    def models(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/models").json()

    def healthy(self) -> bool:
        return self._http.get("/healthz").status_code == 200

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.ready():
                    return
            except httpx.TransportError:
                pass
            time.sleep(interval)
        raise TimeoutError(f"service at {self._http.base_url} not ready after {timeout:g} s")

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text

    # --- plumbing

    def _images(self, path: str, **kwargs: Any) -> Result:
        if "json" in kwargs:
            kwargs["json"] = {k: v for k, v in kwargs["json"].items() if v is not None}
        response = self._request("POST", path, **kwargs)
        seed = response.headers.get("X-Seed")
        return Result(
            response.content,
            response.headers.get("content-type", ""),
            int(seed) if seed is not None else None,
            response.headers.get(REQUEST_ID),
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._send(method, path, lambda response: response.read(), **kwargs)

    def _send(
        self, method: str, path: str, consume: Callable[[httpx.Response], object], **kwargs: Any
    ) -> httpx.Response:
        """The answer to one request, retried as the module says; ``consume`` reads a 2xx/3xx body (a
        connection lost while it reads is retried too)."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                with self._http.stream(method, path, **kwargs) as response:
                    if response.status_code in RETRYABLE and not last:
                        response.read()
                        self._sleep(self.delay(attempt, retry_after(response)))
                        continue
                    if response.status_code >= 400:
                        response.read()
                        raise _error(response)
                    consume(response)
                    return response
            except RETRYABLE_ERRORS:
                if last:
                    raise
                self._sleep(self.delay(attempt, None))
        raise AssertionError("unreachable")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt + 1``: ``Retry-After`` (at most ``max_retry_after``), plus
        a backoff doubling with each attempt (at most ``max_backoff``), jittered so clients spread out."""
        backoff = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + 0.5 * self._rng.random())
        return min(retry_after or 0.0, self.max_retry_after) + backoff

    def _seed(self, seed: int | None, count: int) -> int:
        """The request's seed, or one chosen here (leaving room for ``count`` consecutive seeds), so that a
        retry asks for the same images."""
        return choose_seed(seed, count, self._rng)


def _image(image: ImageInput) -> str:
    """base64 of PNG or ``.npy`` bytes, as ``/v1/project`` and ``/v1/edit`` take images."""
    if isinstance(image, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, image, allow_pickle=False)
        image = buffer.getvalue()
    elif isinstance(image, str | Path):
        image = Path(image).read_bytes()
    return base64.b64encode(image).decode("ascii")


def _source(value: int | Sequence[float]) -> dict:
    return {"seed": value} if isinstance(value, int) else {"latent": [float(v) for v in value]}


def _keys(mix: Mapping[int, float] | None) -> dict[str, float] | None:
    return {str(k): v for k, v in mix.items()} if mix is not None else None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (given as seconds or as an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error(response: httpx.Response) -> ServiceError:
    try:
        body = response.json()
        message = body.get("error") or body.get("detail") or response.text
    except ValueError:
        message = response.text
    return ServiceError(response.status_code, str(message))

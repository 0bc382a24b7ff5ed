"""A small synchronous client for every endpoint of the service (httpx + numpy; no torch).

    with GanClient("http://localhost:8000") as client:
        digits = client.generate(7, n=16, seed=1).array()          # uint8 [16, 28, 28]
        x, y = client.bulk(n=10_000, weights={3: 1, 8: 1}, seed=0)  # labelled synthetic data

An unconditional model (``conditional`` false in ``models()``) takes no label: ``generate(n=16)``,
``interpolate(1, 2)``, ``bulk(n)`` (whose ``y`` is -1 for every image).

Requests answered 429/503 are retried after ``Retry-After`` (up to ``retries`` times); other errors raise
``ServiceError`` with the server's message.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

RETRYABLE = {429, 503}
REQUEST_ID = "X-Request-ID"


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
        transport: httpx.BaseTransport | None = None,
    ):
        headers = {api_key_header: api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

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
        body = {
            "labels": list(labels),
            "seed": seed,
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
        body = {
            "n": n,
            "counts": _keys(counts),
            "weights": _keys(weights),
            "seed": seed,
            "truncation": truncation,
            "shuffle": shuffle,
        }
        body = {k: v for k, v in body.items() if v is not None}
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(path) if path is not None else Path(tmp) / "bulk.npz"
            for attempt in range(self.retries + 1):
                with self._http.stream("POST", "/v1/bulk", json=body) as response:
                    if response.status_code in RETRYABLE and attempt < self.retries:
                        response.read()
                        time.sleep(_retry_after(response))
                        continue
                    if response.status_code != 200:
                        response.read()
                        raise _error(response)
                    with target.open("wb") as out:
                        for block in response.iter_bytes():
                            out.write(block)
                    break
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
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, **kwargs)
            if response.status_code in RETRYABLE and attempt < self.retries:
                time.sleep(_retry_after(response))
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response
        raise AssertionError("unreachable")


def _source(value: int | Sequence[float]) -> dict:
    return {"seed": value} if isinstance(value, int) else {"latent": [float(v) for v in value]}


def _keys(mix: Mapping[int, float] | None) -> dict[str, float] | None:
    return {str(k): v for k, v in mix.items()} if mix is not None else None


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _error(response: httpx.Response) -> ServiceError:
    try:
        body = response.json()
        message = body.get("error") or body.get("detail") or response.text
    except ValueError:
        message = response.text
    return ServiceError(response.status_code, str(message))

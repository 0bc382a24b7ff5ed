"""The requests real clients send, each with the check its answer must pass. Both load generators (locust and
the asyncio one of the benchmark and the soak) build their requests here, so they test the same things.

Every factory takes a seeded ``random.Random`` and the served model's ``ModelInfo`` and returns a ``Call``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlencode

from loadtest import checks
from loadtest.checks import ModelInfo

SEED_SPACE = 2**31  # random request seeds stay well inside the service's range
GRID_N = (4, 16)
STEPS = (4, 16)
ARITHMETIC_TERMS = 3
ARITHMETIC_SEEDS = 3
NPY_BATCH_N = (64, 1024)  # an augmentation client's /generate?format=npy batch
BULK_N = 4096  # one streamed .npz pull
API_KEY_ENV = "LOADTEST_API_KEY"  # locust users send it as X-API-Key when set (a service with GAN_API_KEYS)

Check = Callable[[int, str | None, bytes], None]


@dataclass(frozen=True)
class Call:
    name: str  # how reports group it
    endpoint: str  # the route, as the service's metrics label it
    method: str
    check: Check  # raises checks.CheckFailed
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    images: int = 1

    @property
    def url(self) -> str:
        return f"{self.endpoint}?{urlencode(self.params)}" if self.params else self.endpoint


def _png(info: ModelInfo, n: int, status: int, content_type: str | None, body: bytes) -> None:
    checks.status(status, content_type, "image/png")
    if n == 1:
        checks.single_png(body, info)
    else:
        checks.grid_png(body, info, n)


def _npy(info: ModelInfo, n: int, status: int, content_type: str | None, body: bytes) -> None:
    checks.status(status, content_type, "application/x-npy")
    checks.npy(body, info, n)


def _npz(info: ModelInfo, n: int, status: int, content_type: str | None, body: bytes) -> None:
    checks.status(status, content_type, "application/x-npz")
    checks.npz_bulk(body, info, n)


def _json(info: ModelInfo, n: int, status: int, content_type: str | None, body: bytes) -> None:
    checks.status(status, content_type, "application/json")
    checks.json_images(body, info, n)


def _label(rng: random.Random, info: ModelInfo) -> int:
    return rng.randrange(info.num_classes)


def single_image(rng: random.Random, info: ModelInfo) -> Call:
    """The contract's basic call: one PNG of a random label (random seed, chosen by the server)."""
    return Call(
        "POST /generate n=1", "/generate", "POST", partial(_png, info, 1), {"label": _label(rng, info)}
    )


def grid(rng: random.Random, info: ModelInfo) -> Call:
    n = rng.randint(*GRID_N)
    params = {"label": _label(rng, info), "n": n, "seed": rng.randrange(SEED_SPACE)}
    return Call("POST /generate grid", "/generate", "POST", partial(_png, info, n), params, images=n)


def json_batch(rng: random.Random, info: ModelInfo) -> Call:
    n = rng.randint(1, 4)
    params = {"label": _label(rng, info), "n": n, "format": "json", "truncation": 0.7}
    return Call("POST /generate json", "/generate", "POST", partial(_json, info, n), params, images=n)


def npy_batch(rng: random.Random, info: ModelInfo, n: int | None = None) -> Call:
    n = n or rng.randint(*NPY_BATCH_N)
    params = {"label": _label(rng, info), "n": n, "format": "npy", "seed": rng.randrange(SEED_SPACE)}
    return Call("POST /generate npy", "/generate", "POST", partial(_npy, info, n), params, images=n)


def bulk(rng: random.Random, info: ModelInfo, n: int = BULK_N) -> Call:
    body = {"n": n, "seed": rng.randrange(SEED_SPACE)}
    return Call("POST /v1/bulk", "/v1/bulk", "POST", partial(_npz, info, n), body=body, images=n)


def interpolate(rng: random.Random, info: ModelInfo) -> Call:
    steps = rng.randint(*STEPS)
    body = {
        "start": {"seed": rng.randrange(SEED_SPACE)},
        "end": {"seed": rng.randrange(SEED_SPACE)},
        "label": _label(rng, info),
        "steps": steps,
        "method": rng.choice(["slerp", "lerp"]),
    }
    return Call(
        "POST /v1/interpolate", "/v1/interpolate", "POST", partial(_png, info, steps), body=body, images=steps
    )


def interpolate_labels(rng: random.Random, info: ModelInfo) -> Call:
    """Label morphing; only when ``info.label_interpolation`` (otherwise the service answers 501)."""
    steps = rng.randint(*STEPS)
    body = {
        "seed": rng.randrange(SEED_SPACE),
        "start_label": _label(rng, info),
        "end_label": _label(rng, info),
        "steps": steps,
    }
    return Call(
        "POST /v1/interpolate/labels",
        "/v1/interpolate/labels",
        "POST",
        partial(_png, info, steps),
        body=body,
        images=steps,
    )


def arithmetic(rng: random.Random, info: ModelInfo) -> Call:
    terms = [
        {"seeds": [rng.randrange(SEED_SPACE) for _ in range(ARITHMETIC_SEEDS)], "weight": weight}
        for weight in (1.0, -1.0, 1.0)[:ARITHMETIC_TERMS]
    ]
    labels = rng.sample(range(info.num_classes), min(3, info.num_classes))
    body = {"terms": terms, "labels": labels, "format": "npy"}
    n = len(labels)
    return Call("POST /v1/arithmetic", "/v1/arithmetic", "POST", partial(_npy, info, n), body=body, images=n)


def every_label(rng: random.Random, info: ModelInfo) -> Call:
    n = info.num_classes
    return Call(
        "POST /v1/every-label",
        "/v1/every-label",
        "POST",
        partial(_png, info, n),
        body={"seed": rng.randrange(SEED_SPACE)},
        images=n,
    )


Factory = Callable[[random.Random, ModelInfo], Call]


def weighted(choices: list[tuple[Factory, float]]) -> Factory:
    """A factory picking one of ``choices`` with the given weights."""
    factories, weights = zip(*choices, strict=True)

    def pick(rng: random.Random, info: ModelInfo) -> Call:
        return rng.choices(factories, weights)[0](rng, info)

    return pick

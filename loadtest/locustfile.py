"""Locust traffic for the generation service: one user class per kind of client, weighted like real
traffic. Every answer is checked (status, content type, PNG/npy/npz shape against ``GET /v1/models``), not
just counted.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000   # web UI
    gan-loadtest --run-time 60s                                      # headless, reports in reports/loadtest/
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, between, constant_pacing, task

from loadtest import traffic
from loadtest.checks import CheckFailed, ModelInfo, model_info
from loadtest.traffic import API_KEY_ENV


class GanUser(FastHttpUser):
    """Reads the served model once, then sends ``traffic`` calls; an answer that does not check fails."""

    abstract = True
    info: ModelInfo
    default_headers = {"X-API-Key": os.environ[API_KEY_ENV]} if os.environ.get(API_KEY_ENV) else None

    def on_start(self) -> None:
        self.rng = random.Random()
        with self.client.get("/v1/models", name="GET /v1/models", catch_response=True) as response:
            try:
                if response.status_code != 200:
                    raise CheckFailed(f"HTTP {response.status_code}")
                self.info = model_info(json.loads(response.content or b"null"))
            except (CheckFailed, ValueError) as exc:
                response.failure(f"/v1/models: {exc}")
                raise
            response.success()

    def send(self, factory: traffic.Factory) -> None:
        call = factory(self.rng, self.info)
        with self.client.request(
            call.method, call.url, name=call.name, json=call.body, catch_response=True
        ) as response:
            try:
                call.check(
                    response.status_code, response.headers.get("content-type"), response.content or b""
                )
            except CheckFailed as exc:
                response.failure(str(exc))
            else:
                response.success()


class SingleImageUser(GanUser):
    """The contract's basic client: one PNG of a random digit, a short pause, again."""

    weight = 10
    wait_time = between(0.05, 0.5)

    @task
    def single(self) -> None:
        self.send(traffic.single_image)


class GridUser(GanUser):
    """Small grids (n = 4..16) as PNG, now and then as JSON with latents."""

    weight = 3
    wait_time = between(0.2, 1.0)

    @task(4)
    def png_grid(self) -> None:
        self.send(traffic.grid)

    @task(1)
    def json_batch(self) -> None:
        self.send(traffic.json_batch)


class InterpolationUser(GanUser):
    """Latent walks, and label morphs when the model has the label_morph graph."""

    weight = 2
    wait_time = between(0.5, 2.0)

    @task(3)
    def latent_walk(self) -> None:
        self.send(traffic.interpolate)

    @task(1)
    def label_morph(self) -> None:
        if self.info.label_interpolation:
            self.send(traffic.interpolate_labels)


class ArithmeticUser(GanUser):
    """Latent arithmetic and one style under every label."""

    weight = 2
    wait_time = between(0.5, 2.0)

    @task(2)
    def arithmetic(self) -> None:
        self.send(traffic.arithmetic)

    @task(1)
    def every_label(self) -> None:
        self.send(traffic.every_label)


class AugmentationUser(GanUser):
    """A training pipeline pulling synthetic data: .npy batches and streamed .npz bulk, at a steady pace."""

    weight = 1
    wait_time = constant_pacing(2.0)

    @task(3)
    def npy_batch(self) -> None:
        self.send(traffic.npy_batch)

    @task(1)
    def bulk(self) -> None:
        self.send(traffic.bulk)

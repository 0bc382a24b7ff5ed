"""Locust traffic for the generation service: one user class per kind of client, weighted like real
traffic. Every answer is checked (status, content type, PNG/npy/npz shape against ``GET /v1/models``), not
just counted.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000   # web UI
    gan-loadtest --run-time 60s                                      # headless, reports in reports/loadtest/

Headless, the users are split among the classes by weight but every class gets at least one user when there
are at least as many users as classes (``stats.apportion``, as each class's ``fixed_count``): by weight
alone, locust gave 10 users no bulk client. With ``GAN_LOCUST_FINAL_STATS`` set, the final statistics, the
very figures of the table locust prints at the end, are written there as JSON when locust quits (its CSV is
rewritten only once a second, so it can miss the last requests): ``gan-loadtest``'s summary reads them.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, User, between, constant_pacing, events, task
from locust.env import Environment
from locust.stats import RequestStats

from loadtest import traffic
from loadtest.checks import CheckFailed, ModelInfo, model_info
from loadtest.reports import FINAL_STATS_ENV
from loadtest.stats import PERCENTILES, apportion
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
    """A training pipeline pulling synthetic data as .npy batches, at a steady pace."""

    weight = 1
    wait_time = constant_pacing(2.0)

    @task
    def npy_batch(self) -> None:
        self.send(traffic.npy_batch)


class BulkUser(GanUser):
    """A training pipeline pulling a streamed .npz bulk now and then."""

    weight = 1
    wait_time = constant_pacing(8.0)

    @task
    def bulk(self) -> None:
        self.send(traffic.bulk)


USER_CLASSES: tuple[type[GanUser], ...] = (
    SingleImageUser,
    GridUser,
    InterpolationUser,
    ArithmeticUser,
    AugmentationUser,
    BulkUser,
)


def fix_counts(users: int, classes: tuple[type[User], ...] = USER_CLASSES) -> dict[str, int]:
    """Set each class's ``fixed_count`` to its share of ``users`` (at least one each, when there are enough
    users); returns the counts by class name."""
    counts = apportion(users, [cls.weight for cls in classes])
    for cls, count in zip(classes, counts, strict=True):
        cls.fixed_count = count
    return {cls.__name__: count for cls, count in zip(classes, counts, strict=True)}


def final_stats(stats: RequestStats) -> dict[str, Any]:
    """Locust's statistics as its final table prints them: per request name, the aggregate, the failures."""

    def row(entry: Any) -> dict[str, Any]:
        timed = entry.num_requests > 0
        return {
            "name": entry.name,
            "method": entry.method or "",
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "rps": entry.total_rps,
            **{
                f"p{q}_ms": entry.get_response_time_percentile(q / 100) if timed else None
                for q in PERCENTILES
            },
            "max_ms": entry.max_response_time if timed else None,
        }

    return {
        "endpoints": [row(stats.entries[key]) for key in sorted(stats.entries)],
        "aggregate": row(stats.total),
        "failures": [
            {"name": error.name, "error": str(error.error), "occurrences": error.occurrences}
            for error in stats.errors.values()
        ],
    }


_SESSION: dict[str, Environment] = {}  # the environment locust runs, for the quit listener


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    # gevent's clock is read when its loop turns, and it has not turned since locust's import: on a loaded
    # machine its start-up took seconds, and the --run-time timer set next would fire that much too early
    gevent.get_hub().loop.update_now()
    _SESSION["environment"] = environment
    options = environment.parsed_options
    if options is not None and options.headless and options.num_users:
        fix_counts(options.num_users)


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    """After locust printed its final table: the same figures, for gan-loadtest's summary."""
    target, environment = os.environ.get(FINAL_STATS_ENV), _SESSION.get("environment")
    if target and environment is not None and environment.runner is not None:
        Path(target).write_text(json.dumps(final_stats(environment.runner.stats), indent=2) + "\n")

"""One service subprocess (the shipped model, shipped settings, a free port) for the load-test tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest import server

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan"


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.Server]:
    if not (MODEL_DIR / "manifest.json").is_file():
        pytest.fail(f"{MODEL_DIR} is missing: the load tests run against the shipped model")
    log = tmp_path_factory.mktemp("loadtest-server") / "service.log"
    with server.service({"model_dir": MODEL_DIR, "access_log": "false", "max_batch": 16}, log) as srv:
        yield srv

"""Fixtures for the service tests (helpers live in ``service_support``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from service_support import (
    LIVE_SETTINGS,
    MODEL_DIR,
    GatedRuntime,
    build_unconditional_model,
    make_settings,
    running_server,
    serve_in_process,
)

from service.config import Settings
from service.model_repo import ModelSpec

if TYPE_CHECKING:  # imported lazily: importing it warns before pytest's warning filters are set
    from fastapi.testclient import TestClient


@pytest.fixture(scope="session", autouse=True)
def _model_dir_present() -> None:
    if not (MODEL_DIR / "manifest.json").is_file():
        pytest.fail(f"{MODEL_DIR} is missing: the service tests serve the shipped default model")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """The default model through the real app, in process."""
    with serve_in_process(make_settings(max_steps=16)) as client:
        yield client


@pytest.fixture(scope="session")
def unconditional_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny unconditional model (``conditional: false``), exported once per session."""
    return build_unconditional_model(tmp_path_factory.mktemp("unconditional"))


@pytest.fixture
def gated() -> Callable[[ModelSpec, Settings], GatedRuntime]:
    """A runtime factory that remembers the runtime it made (``factory.runtime``)."""

    def factory(spec: ModelSpec, settings: Settings) -> GatedRuntime:
        factory.runtime = GatedRuntime(spec, settings)  # type: ignore[attr-defined]
        return factory.runtime  # type: ignore[attr-defined]

    return factory


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """One `gan-serve` subprocess for the tests that need a real server; yields its base URL."""
    with running_server(drain_s=0, **LIVE_SETTINGS) as (url, _):
        yield url


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A writable copy of the default model directory."""
    target = tmp_path / "model"
    shutil.copytree(MODEL_DIR, target)
    return target

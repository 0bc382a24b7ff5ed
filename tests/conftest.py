"""Shared by every part's tests: where the repository and its shipped models are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def pytest_configure(config: pytest.Config) -> None:
    # Starlette nudges TestClient users towards httpx2 (not a dependency); its httpx transport works as tested
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")

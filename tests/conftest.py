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


@pytest.fixture(scope="session")
def pixelcnn_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny trained and exported pixelcnn, ``(run directory, model directory)``, made once per session for
    the export and service tests (tests/pixelcnn_support.py)."""
    from pixelcnn_support import build_pixelcnn

    return build_pixelcnn(tmp_path_factory.mktemp("pixelcnn"))

"""Shared by every part's tests: where the repository and its shipped models are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT

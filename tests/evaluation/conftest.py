"""The shipped domain classifier and its real reference images, loaded once for the evaluation tests."""

from __future__ import annotations

import pytest

from evaluation.evaluate import Reference, load_reference


@pytest.fixture(scope="session")
def reference() -> Reference:
    return load_reference()

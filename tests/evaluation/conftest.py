"""The shipped domain classifier and its real reference images, loaded once for the evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from evaluation.evaluate import Reference, load_reference


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """gan-eval's default (--threads 1). On the shared 2-core machine, training a CAS classifier with torch's
    default 2 threads took 3x as long as with 1 (measured: 6 s vs 2 s for 1,000 images, one epoch)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reference() -> Reference:
    return load_reference()

"""Bulk .npz streams: label mixes, determinism, agreement with /generate, and flat memory while streaming."""

from __future__ import annotations

import asyncio
import io
import tracemalloc

import numpy as np
import pytest
from service_support import MODEL_DIR

from service import label_mix
from service.encoding import stream_npz
from service.model_repo import load_model_dir

SPEC = load_model_dir(MODEL_DIR)
H, W, C = SPEC.image_shape
K = SPEC.num_classes


def load(response) -> tuple[np.ndarray, np.ndarray]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        assert sorted(archive.files) == ["x", "y"]
        return archive["x"], archive["y"]


def test_balanced_bulk_streams_labelled_images(client):
    response = client.post("/v1/bulk", json={"n": 300, "seed": 4})
    x, y = load(response)
    assert x.shape == ((300, H, W) if C == 1 else (300, H, W, C)) and x.dtype == np.uint8
    assert y.dtype == np.int64 and np.bincount(y, minlength=K).tolist() == [30] * K
    assert response.headers["X-Seed"] == "4" and response.headers["X-Count"] == "300"
    assert "attachment" in response.headers["content-disposition"]


def test_bulk_is_deterministic_and_image_i_uses_seed_plus_i(client):
    body = {"n": 40, "weights": {"1": 1, "7": 3}, "seed": 1000}
    x, y = load(client.post("/v1/bulk", json=body))
    x2, y2 = load(client.post("/v1/bulk", json=body))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert np.bincount(y, minlength=K)[[1, 7]].tolist() == [10, 30]
    for i in (0, 17, 39):
        single = client.post("/generate", params={"label": int(y[i]), "seed": 1000 + i, "format": "npy"})
        np.testing.assert_array_equal(x[i], np.load(io.BytesIO(single.content))[0])


def test_bulk_exact_counts_and_unshuffled_order(client):
    x, y = load(client.post("/v1/bulk", json={"counts": {"0": 3, "9": 2}, "seed": 7, "shuffle": False}))
    assert y.tolist() == [0, 0, 0, 9, 9] and len(x) == 5


def test_bulk_without_seed_returns_the_one_it_used(client):
    response = client.post("/v1/bulk", json={"n": 5})
    _, y = load(response)
    again = client.post("/v1/bulk", json={"n": 5, "seed": int(response.headers["X-Seed"])})
    np.testing.assert_array_equal(load(again)[1], y)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body"]),
        ({"n": 0}, ["body", "n"]),
        ({"n": 10_000_000}, ["body", "n"]),
        ({"counts": {"3": 5}, "n": 5}, ["body"]),
        ({"counts": {"3": -1}}, ["body", "counts", "3"]),
        ({"counts": {"3": 10**30}}, ["body", "counts", "3"]),
        ({"counts": {"3": 2**31 - 1, "4": 2**31 - 1}}, ["body", "counts"]),
        ({"n": 5, "weights": {"3": 1e300, "4": 1e300}}, ["body", "weights", "3"]),
        ({"counts": {"3": 0}}, ["body", "counts"]),
        ({"counts": {str(K): 1}}, ["body", "counts", K]),
        ({"n": 5, "weights": {"3": 0}}, ["body", "weights"]),
        ({"n": 5, "weights": {"3": -1}}, ["body", "weights", "3"]),
        ({"n": 5, "truncation": 0}, ["body", "truncation"]),
        ({"n": 5, "seed": 2**32}, ["body", "seed"]),
        ({"n": 5, "seed": 2**32 - 4}, ["body", "seed"]),  # image 4's seed would be 2**32
    ],
)
def test_bulk_errors_name_the_field(client, body, loc):
    response = client.post("/v1/bulk", json=body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]


def test_weights_split_exactly_by_largest_remainder():
    counts = label_mix.counts_from_weights({0: 1, 1: 1, 2: 1}, 10, 4)
    assert counts.tolist() == [4, 3, 3, 0]
    assert label_mix.balanced_counts(25, 10).sum() == 25
    labels = label_mix.plan_labels(np.array([2, 0, 3]), seed=5)
    assert sorted(labels.tolist()) == [0, 0, 2, 2, 2]
    np.testing.assert_array_equal(labels, label_mix.plan_labels(np.array([2, 0, 3]), seed=5))


def test_npz_stream_memory_stays_flat_for_hundreds_of_thousands_of_images():
    n, chunk = 200_000, 4096
    shape = (n, 28, 28)

    def chunks():
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            yield np.full((rows, 28, 28), start // chunk % 256, dtype=np.uint8)

    async def drain() -> tuple[int, bytes, bytes]:
        total, head, tail = 0, b"", b""
        async for piece in stream_npz(
            [
                ("x", np.dtype(np.uint8), shape, chunks()),
                ("y", np.dtype(np.int64), (n,), iter([np.arange(n)])),
            ]
        ):
            head = head or piece[:4]
            total += len(piece)
            tail = (tail + piece)[-(1 << 16) :]
        return total, head, tail

    tracemalloc.start()
    total, head, _ = asyncio.run(drain())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    payload = n * 28 * 28 + n * 8
    assert head == b"PK\x03\x04" and total > payload
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while streaming {payload / 2**20:.0f} MiB"


def test_npz_stream_is_readable_by_numpy_with_zip64():
    x = np.arange(7 * 3 * 2, dtype=np.uint8).reshape(7, 3, 2)

    async def collect() -> bytes:
        parts = [p async for p in stream_npz([("x", np.dtype(np.uint8), x.shape, iter([x[:3], x[3:]]))])]
        return b"".join(parts)

    with np.load(io.BytesIO(asyncio.run(collect()))) as archive:
        np.testing.assert_array_equal(archive["x"], x)


def test_npz_stream_refuses_a_short_member():
    async def collect() -> None:
        async for _ in stream_npz([("x", np.dtype(np.uint8), (5, 2), iter([np.zeros((4, 2), np.uint8)]))]):
            pass

    with pytest.raises(ValueError, match="header promises"):
        asyncio.run(collect())

"""The httpx client on every endpoint and the torch IterableDataset, against a running `gan-serve`."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from service_support import MODEL_DIR

from contracts import latents
from service.client import GanClient, ServiceError
from service.model_repo import load_model_dir

SPEC = load_model_dir(MODEL_DIR)
K = SPEC.num_classes


@pytest.fixture(scope="module")
def gan(live_server):
    with GanClient(live_server) as client:
        client.wait_ready(timeout=60)
        yield client


def test_client_generation_endpoints(gan):
    result = gan.generate(3, n=4, seed=8)
    images = result.array()
    assert images.shape[0] == 4 and result.seed == 8 and result.request_id
    assert gan.generate(3, n=1, seed=None).seed is not None
    assert gan.generate(3, format="png").content.startswith(b"\x89PNG")
    payload = gan.generate(3, n=2, seed=8, format="json").json()
    assert [i["seed"] for i in payload["images"]] == [8, 9]
    labels = gan.generate_labels([3, 3, 3, 3], seed=8).array()
    np.testing.assert_array_equal(labels, images)
    assert gan.generate_labels(list(range(K)), seed=2, same_latent=True).array().shape[0] == K


def test_client_latent_tools(gan):
    strip = gan.interpolate(1, 2, 6, steps=5).array()
    assert len(strip) == 5
    np.testing.assert_array_equal(strip[0], gan.generate(6, seed=1).array()[0])
    latent = latents.latent_for_seed(2, SPEC.latent_dim)
    np.testing.assert_array_equal(
        gan.interpolate(1, latent, 6, steps=5, method="lerp").array()[-1], strip[-1]
    )
    if SPEC.label_morph is not None:
        assert len(gan.interpolate_labels(4, 3, 8, steps=4).array()) == 4
    assert len(gan.arithmetic([(1.0, [1, 2]), (-1.0, [3]), (1.0, [4])], labels=[2, 5]).array()) == 2
    assert len(gan.every_label(9).array()) == K


def test_client_bulk_models_and_ops(gan, tmp_path):
    path = tmp_path / "data.npz"
    x, y = gan.bulk(50, weights={0: 1, 1: 1}, seed=3, path=path)
    assert path.is_file() and len(x) == 50 and set(y.tolist()) == {0, 1}
    x2, y2 = gan.bulk(counts={4: 3}, seed=3)
    assert y2.tolist() == [4, 4, 4] and len(x2) == 3
    [model] = gan.models()
    assert model["name"] == SPEC.manifest.name
    assert gan.healthy() and gan.ready()
    assert "gan_http_requests_total" in gan.metrics()


def test_client_errors_carry_the_servers_message(gan):
    with pytest.raises(ServiceError) as caught:
        gan.generate(K)
    assert caught.value.status == 422 and "label" in caught.value.message
    with pytest.raises(ServiceError):
        gan.bulk(counts={K: 1})


def test_client_retries_429_after_retry_after():
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "full"}),
        httpx.Response(200, json=[{"name": "m"}]),
    ]
    transport = httpx.MockTransport(lambda request: answers.pop(0))
    with GanClient("http://test", transport=transport, retries=2) as client:
        assert client.models() == [{"name": "m"}]
    always_full = httpx.MockTransport(
        lambda request: httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "full"})
    )
    with (
        GanClient("http://test", transport=always_full, retries=1) as client,
        pytest.raises(ServiceError) as caught,
    ):
        client.models()
    assert caught.value.status == 429


def test_iterable_dataset_pulls_labelled_batches(live_server):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from service.dataset import SyntheticBatches

    dataset = SyntheticBatches(
        live_server, batch_size=16, num_batches=3, weights={3: 1, 8: 1}, seed=5, prefetch=2
    )
    batches = list(DataLoader(dataset, batch_size=None))
    assert len(batches) == len(dataset) == 3
    for x, y in batches:
        h, w, c = SPEC.image_shape
        assert x.shape == (16, c, h, w) and x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert y.dtype == torch.int64 and set(y.tolist()) <= {3, 8}
    again = list(DataLoader(dataset, batch_size=None))
    for (x, y), (x2, y2) in zip(batches, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    with GanClient(live_server) as client:
        x1, y1 = client.bulk(16, weights={3: 1, 8: 1}, seed=dataset.batch_seed(1))
    np.testing.assert_array_equal(
        (batches[1][0].numpy() * 255).round().astype(np.uint8)[:, 0], x1 if x1.ndim == 3 else x1[..., 0]
    )
    np.testing.assert_array_equal(batches[1][1].numpy(), y1)


def test_iterable_dataset_splits_batches_across_workers(live_server):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from service.dataset import SyntheticBatches

    dataset = SyntheticBatches(live_server, batch_size=8, num_batches=4, seed=11, scale="uint8")
    single = list(DataLoader(dataset, batch_size=None))
    parallel = list(DataLoader(dataset, batch_size=None, num_workers=2))

    def key(batch):
        return batch[1].tolist(), batch[0].sum().item()

    assert sorted(map(key, single)) == sorted(map(key, parallel))
    assert single[0][0].dtype == torch.uint8

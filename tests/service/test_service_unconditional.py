"""An unconditional model (manifest ``conditional: false``) through the real app: generated without a label,
and every parameter that names labels is a 422 saying why, so no answer pretends the images have a label."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from service_support import make_settings, serve_in_process, serve_in_thread

from contracts import latents
from service.client import GanClient, ServiceError
from service.model_repo import load_model_dir
from service.routes.bulk import UNLABELLED
from service.runtime import GraphKind, Runtime

LATENT_DIM = 8  # service_support.build_unconditional_model


@pytest.fixture(scope="module")
def uclient(unconditional_model_dir: Path):
    with serve_in_process(make_settings(model_dir=unconditional_model_dir, max_steps=16)) as client:
        yield client


def npy(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def refused(response, *fields: str) -> dict:
    """The 422 of a label parameter sent to the unconditional model: it names each field and says why."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"] and [e["loc"][-1] for e in body["detail"]] == list(fields or ["body"])
    for error in body["detail"]:
        assert "unconditional" in error["msg"] and "ignores labels" in error["msg"]
        assert error["allowed"]
    for field in fields:
        assert f"{field}: model 'uncond' is unconditional" in body["error"]
    return body


def test_models_says_unconditional(uclient, client):
    [card] = uclient.get("/v1/models").json()
    assert card["conditional"] is False and card["label_interpolation"] is False
    assert client.get("/v1/models").json()[0]["conditional"] is True


def test_generate_without_a_label_matches_the_graph_fed_zeros(uclient, unconditional_model_dir):
    images = npy(uclient.post("/generate", params={"n": 3, "seed": 5, "format": "npy"}))
    spec = load_model_dir(unconditional_model_dir)
    z = latents.request_latents(5, 3, LATENT_DIM)
    direct = Runtime(spec, make_settings()).run(GraphKind.MAIN, z, np.zeros(3, dtype=np.int64))
    np.testing.assert_array_equal(images, direct.reshape(images.shape))
    assert uclient.post("/generate").headers["content-type"] == "image/png"
    payload = uclient.post("/generate", params={"n": 2, "seed": 5, "format": "json"}).json()
    assert [image["seed"] for image in payload["images"]] == [5, 6]
    assert all("label" not in image for image in payload["images"])


@pytest.mark.parametrize("label", ["3", "0", "seven", ""])
def test_generate_with_a_label_is_422_saying_why(uclient, label):
    body = refused(uclient.post("/generate", params={"label": label, "n": 2}), "label")
    assert body["detail"][0]["loc"] == ["query", "label"] and body["detail"][0]["input"] == label


def test_generate_keeps_its_other_bounds(uclient):
    response = uclient.post("/generate", params={"n": 0})
    assert response.status_code == 422 and response.json()["detail"][0]["allowed"] == "1 <= n <= 1024"


def test_label_routes_are_422_naming_the_field(uclient):
    refused(uclient.post("/v1/generate", json={"labels": [3, 3]}), "labels")
    walk = {"start": {"seed": 1}, "end": {"seed": 2}, "label": 3}
    refused(uclient.post("/v1/interpolate", json=walk), "label")
    morph = {"seed": 1, "start_label": 3, "end_label": 8}
    refused(uclient.post("/v1/interpolate/labels", json=morph), "start_label", "end_label")
    refused(uclient.post("/v1/arithmetic", json={"terms": [{"seeds": [1]}], "labels": [2]}), "labels")
    body = refused(uclient.post("/v1/every-label", json={"seed": 1}))
    assert body["detail"][0]["loc"] == ["body"] and "every label would give the same image" in body["error"]


def test_bulk_with_only_n_has_y_minus_one_and_the_images_of_generate(uclient):
    response = uclient.post("/v1/bulk", json={"n": 5, "seed": 40})
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        x, y = archive["x"], archive["y"]
    assert y.dtype == np.int64 and y.tolist() == [UNLABELLED] * 5 == [-1] * 5
    same = npy(uclient.post("/generate", params={"n": 5, "seed": 40, "format": "npy"}))
    np.testing.assert_array_equal(x, same)


@pytest.mark.parametrize("field", ["counts", "weights"])
def test_bulk_label_mixes_are_422(uclient, field):
    body = {"counts": {"3": 2}} if field == "counts" else {"n": 4, "weights": {"3": 1}}
    error = refused(uclient.post("/v1/bulk", json=body), field)["detail"][0]
    assert error["loc"] == ["body", field]


def test_latent_interpolation_and_arithmetic_work_without_labels(uclient):
    base = {"start": {"seed": 1}, "end": {"seed": 2}, "steps": 4, "format": "npy"}
    strip = npy(uclient.post("/v1/interpolate", json=base))
    ends = npy(uclient.post("/generate", params={"n": 2, "seed": 1, "format": "npy"}))
    np.testing.assert_array_equal(strip[[0, -1]], ends)
    items = uclient.post("/v1/interpolate", json={**base, "format": "json"}).json()["images"]
    assert len(items) == 4 and all("label" not in item for item in items)

    one = npy(uclient.post("/v1/arithmetic", json={"terms": [{"seeds": [2]}], "format": "npy"}))
    np.testing.assert_array_equal(one, ends[1:])
    shown = {"terms": [{"seeds": [1]}, {"seeds": [2], "weight": -1}], "show_terms": True, "format": "json"}
    items = uclient.post("/v1/arithmetic", json=shown).json()["images"]
    assert len(items) == 3 and all("label" not in item for item in items)


def test_openapi_says_label_is_optional_and_refused(uclient):
    document = uclient.get("/openapi.json").json()
    generate = document["paths"]["/generate"]["post"]
    [label] = [p for p in generate["parameters"] if p["name"] == "label"]
    assert label["required"] is False and "unconditional" in label["description"]
    assert "unconditional" in generate["responses"]["422"]["description"]
    interpolate = document["paths"]["/v1/interpolate"]["post"]["requestBody"]["content"]["application/json"]
    schema = document["components"]["schemas"][interpolate["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert "label" not in schema.get("required", [])
    assert "-1" in document["paths"]["/v1/bulk"]["post"]["responses"]["200"]["description"]
    assert document["info"]["summary"].startswith("Unconditional")


def test_client_and_dataset_work_with_an_unconditional_model(unconditional_model_dir):
    settings = make_settings(model_dir=unconditional_model_dir)
    with serve_in_thread(settings) as url, GanClient(url) as gan:
        assert gan.models()[0]["conditional"] is False
        result = gan.generate(n=4, seed=3)
        assert result.array().shape == (4, 28, 28) and result.seed == 3
        np.testing.assert_array_equal(gan.interpolate(3, 6, steps=2).array()[0], result.array()[0])
        x, y = gan.bulk(4, seed=3)
        np.testing.assert_array_equal(x, result.array())
        assert y.tolist() == [-1] * 4
        with pytest.raises(ServiceError) as refused_label:
            gan.generate(3)
        assert refused_label.value.status == 422 and "unconditional" in refused_label.value.message

        torch = pytest.importorskip("torch")
        from torch.utils.data import DataLoader

        from service.dataset import SyntheticBatches

        dataset = SyntheticBatches(url, batch_size=4, num_batches=1)
        [(images, labels)] = list(DataLoader(dataset, batch_size=None))
        assert images.shape == (4, 1, 28, 28) and torch.equal(labels, torch.full((4,), -1))

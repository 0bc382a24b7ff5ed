"""Interpolation (latents and labels), latent arithmetic and "every label" through the real app."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from service_support import MODEL_DIR, make_settings, serve_in_process

from contracts import latents
from service.model_repo import load_model_dir

SPEC = load_model_dir(MODEL_DIR)
H, W, C = SPEC.image_shape
D, K = SPEC.latent_dim, SPEC.num_classes


def npy(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def generate(client, label: int, seed: int, truncation: float = 1.0) -> np.ndarray:
    params = {"label": label, "seed": seed, "format": "npy", "truncation": truncation}
    return npy(client.post("/generate", params=params))[0]


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_interpolation_ends_are_the_endpoint_images(client, method):
    body = {
        "start": {"seed": 21},
        "end": {"seed": 22},
        "label": 3,
        "steps": 7,
        "method": method,
        "format": "npy",
    }
    strip = npy(client.post("/v1/interpolate", json=body))
    assert len(strip) == 7
    np.testing.assert_array_equal(strip[0], generate(client, 3, 21))
    np.testing.assert_array_equal(strip[-1], generate(client, 3, 22))
    assert not np.array_equal(strip[3], strip[0])


def test_slerp_is_the_default_and_follows_the_great_circle(client):
    body = {
        "start": {"seed": 1},
        "end": {"seed": 2},
        "label": 5,
        "steps": 5,
        "format": "json",
        "truncation": 0.8,
    }
    items = client.post("/v1/interpolate", json=body).json()["images"]
    a = latents.truncate(latents.latent_for_seed(1, D)[None], 0.8)[0]
    b = latents.truncate(latents.latent_for_seed(2, D)[None], 0.8)[0]
    expected = latents.slerp(a, b, latents.interpolation_steps(5))
    np.testing.assert_array_equal(np.asarray([i["latent"] for i in items], dtype=np.float32), expected)
    assert (items[0]["seed"], items[-1]["seed"]) == (1, 2) and "seed" not in items[2]


def test_explicit_latent_endpoints(client):
    start = latents.latent_for_seed(77, D)
    body = {"start": {"latent": start.tolist()}, "end": {"seed": 78}, "label": 0, "steps": 3, "format": "npy"}
    strip = npy(client.post("/v1/interpolate", json=body))
    np.testing.assert_array_equal(strip[0], generate(client, 0, 77))


def test_interpolation_png_is_a_strip(client):
    body = {"start": {"seed": 1}, "end": {"seed": 2}, "label": 1, "steps": 4}
    image = Image.open(io.BytesIO(client.post("/v1/interpolate", json=body).content))
    padding = make_settings().grid_padding
    assert image.size == (4 * W + 3 * padding, H)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"start": {"seed": 1}, "end": {"seed": 2}, "label": K}, ["body", "label"]),
        ({"start": {"seed": 1}, "end": {"seed": 2}, "label": 0, "steps": 1}, ["body", "steps"]),
        (
            {"start": {"seed": 1}, "end": {"seed": 2}, "label": 0, "steps": 17},
            ["body", "steps"],
        ),  # max_steps=16
        ({"start": {"seed": 1}, "end": {"seed": 2}, "label": 0, "method": "cubic"}, ["body", "method"]),
        ({"start": {"seed": 1, "latent": [0.0] * D}, "end": {"seed": 2}, "label": 0}, ["body", "start"]),
        ({"start": {}, "end": {"seed": 2}, "label": 0}, ["body", "start"]),
        ({"start": {"latent": [0.0] * (D + 1)}, "end": {"seed": 2}, "label": 0}, ["body", "start", "latent"]),
        ({"start": {"latent": [1e6] * D}, "end": {"seed": 2}, "label": 0}, ["body", "start", "latent"]),
        ({"start": {"seed": 1}, "end": {"seed": 2}}, ["body", "label"]),
    ],
)
def test_interpolation_errors(client, body, loc):
    response = client.post("/v1/interpolate", json=body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]


def test_non_finite_latent_is_422(client):
    raw = '{"start": {"latent": [NaN]}, "end": {"seed": 2}, "label": 0}'
    response = client.post("/v1/interpolate", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422


# --- label interpolation


def test_label_morph_needs_the_label_morph_graph(model_copy):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest.pop("extra_graphs", None)
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with serve_in_process(make_settings(model_dir=model_copy)) as client:
        response = client.post("/v1/interpolate/labels", json={"seed": 1, "start_label": 3, "end_label": 8})
        assert response.status_code == 501
        assert "label_morph" in response.json()["error"]
        assert client.get("/v1/models").json()[0]["label_interpolation"] is False


@pytest.mark.skipif(SPEC.label_morph is None, reason="the shipped model has no label_morph graph")
def test_label_morph_walks_from_one_label_to_the_other(client):
    body = {"seed": 12, "start_label": 3, "end_label": 8, "steps": 6, "format": "json"}
    items = client.post("/v1/interpolate/labels", json=body).json()["images"]
    weights = np.asarray([i["label_weights"] for i in items])
    np.testing.assert_allclose(weights[:, 3] + weights[:, 8], 1.0)
    assert weights[0, 3] == 1.0 and weights[-1, 8] == 1.0
    assert np.all(np.diff(weights[:, 8]) > 0)
    strip = npy(client.post("/v1/interpolate/labels", json={**body, "format": "npy"}))
    # one-hot weights through the morph graph reproduce the plain graph (up to float rounding of one level)
    for image, label in ((strip[0], 3), (strip[-1], 8)):
        diff = np.abs(image.astype(int) - generate(client, label, 12).astype(int))
        assert diff.max() <= 1
    assert client.get("/v1/models").json()[0]["label_interpolation"] is True


@pytest.mark.skipif(SPEC.label_morph is None, reason="the shipped model has no label_morph graph")
def test_label_morph_errors(client):
    for body, loc in [
        ({"seed": 1, "start_label": K, "end_label": 0}, ["body", "start_label"]),
        ({"seed": 1, "start_label": 0, "end_label": -1}, ["body", "end_label"]),
        ({"start_label": 0, "end_label": 1}, ["body"]),
    ]:
        response = client.post("/v1/interpolate/labels", json=body)
        assert response.status_code == 422
        assert loc in [e["loc"] for e in response.json()["detail"]]


# --- arithmetic


def test_arithmetic_renders_the_weighted_sum_of_mean_latents(client):
    terms = [{"seeds": [1, 2, 3]}, {"seeds": [4, 5, 6], "weight": -1}, {"seeds": [7, 8, 9], "weight": 1}]
    body = {"terms": terms, "labels": [2, 7], "format": "json", "truncation": 0.9}
    items = client.post("/v1/arithmetic", json=body).json()["images"]
    means = [latents.mean_latent(t["seeds"], D) * np.float32(0.9) for t in terms]
    expected = latents.weighted_sum([1, -1, 1], means)
    assert [i["label"] for i in items] == [2, 7]
    for item in items:
        np.testing.assert_allclose(
            np.asarray(item["latent"], dtype=np.float32), expected, rtol=1e-6, atol=1e-6
        )


def test_arithmetic_with_terms_shown_matches_interpolation_of_its_latent(client):
    terms = [{"seeds": [1, 2]}, {"seeds": [3], "weight": 0.5}]
    body = {"terms": terms, "labels": [4], "show_terms": True, "format": "npy"}
    images = npy(client.post("/v1/arithmetic", json=body))
    assert len(images) == 3  # two terms, then the result
    result = latents.weighted_sum([1, 0.5], [latents.mean_latent([1, 2], D), latents.mean_latent([3], D)])
    same = {"latent": result.tolist()}
    rendered = npy(
        client.post(
            "/v1/interpolate", json={"start": same, "end": same, "label": 4, "steps": 2, "format": "npy"}
        )
    )
    np.testing.assert_array_equal(images[2], rendered[0])
    np.testing.assert_array_equal(images[1], generate(client, 4, 3))  # a one-seed term is that seed's image


def test_arithmetic_defaults_to_every_label(client):
    images = npy(client.post("/v1/arithmetic", json={"terms": [{"seeds": [5]}], "format": "npy"}))
    assert len(images) == K


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"terms": []}, ["body", "terms"]),
        ({"terms": [{"seeds": [1]}] * 9}, ["body", "terms"]),
        ({"terms": [{"seeds": list(range(17))}]}, ["body", "terms", 0, "seeds"]),
        ({"terms": [{"seeds": []}]}, ["body", "terms", 0, "seeds"]),
        ({"terms": [{"seeds": [-1]}]}, ["body", "terms", 0, "seeds", 0]),
        ({"terms": [{"seeds": [1], "weight": 1e9}]}, ["body", "terms", 0, "weight"]),
        ({"terms": [{"seeds": [1]}], "labels": [K]}, ["body", "labels", 0]),
    ],
)
def test_arithmetic_errors(client, body, loc):
    response = client.post("/v1/arithmetic", json=body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]


def test_every_label_is_one_latent_under_each_label(client):
    images = npy(client.post("/v1/every-label", json={"seed": 31, "format": "npy", "truncation": 0.6}))
    assert len(images) == K
    for label in (0, K - 1):
        np.testing.assert_array_equal(images[label], generate(client, label, 31, truncation=0.6))
    response = client.post("/v1/every-label", json={"seed": 31})
    padding = make_settings().grid_padding
    assert Image.open(io.BytesIO(response.content)).size == (K * W + (K - 1) * padding, H)

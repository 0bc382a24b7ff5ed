"""An autoregressive model (pixelcnn) through the real app: generate, every-label and bulk work under the seed
contract (the seed fixes every pixel's draw), the latent-space routes answer 422 saying why, and /v1/models
says what it supports."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pixelcnn_support import CLASSES, SERVING_MAX_BATCH, SIDE
from service_support import make_settings, serve_in_process

from contracts import latents
from service.model_repo import load_model_dir
from service.runtime import GraphKind, Runtime

# the tiny model these tests serve is trained and exported here, with torch: absent from a serve-only install
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pclient(pixelcnn_dirs: tuple[Path, Path]):
    with serve_in_process(make_settings(model_dir=pixelcnn_dirs[1], max_steps=16)) as client:
        yield client


def npy(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def test_models_says_autoregressive_without_a_latent_space(pclient):
    [card] = pclient.get("/v1/models").json()
    assert card["sampling"] == "autoregressive" and card["latent_space"] is False
    assert card["latent_dim"] == SIDE * SIDE and card["max_batch"] == SERVING_MAX_BATCH
    assert card["bulk_max_batch"] == SERVING_MAX_BATCH  # the hint caps the bulk streams' batches too
    assert card["ort_call_max_rows"] == SERVING_MAX_BATCH  # and each ONNX Runtime call
    assert card["label_interpolation"] is False and card["conditional"] is True


def test_the_hint_bounds_every_call_however_the_runtime_is_opened(pixelcnn_dirs):
    """With one worker gan-serve serves the runtime its CLI opened, from settings the app had not yet given
    the hint to: the runtime applies it itself."""
    settings = make_settings(model_dir=pixelcnn_dirs[1], max_steps=16)
    assert settings.max_batch > SERVING_MAX_BATCH
    assert Runtime(load_model_dir(pixelcnn_dirs[1]), settings).call_max_rows == SERVING_MAX_BATCH


def test_same_seed_same_bytes_and_the_graph_of_the_seeds_noise(pclient, pixelcnn_dirs):
    query = {"label": 1, "n": 6, "seed": 9, "format": "npy"}  # 6 > max_batch: split over two batches
    first, again = pclient.post("/generate", params=query), pclient.post("/generate", params=query)
    assert first.content == again.content
    images = npy(first)
    spec = load_model_dir(pixelcnn_dirs[1])
    z = latents.request_latents(9, 6, SIDE * SIDE)
    direct = Runtime(spec, make_settings(model_dir=pixelcnn_dirs[1])).run(
        GraphKind.MAIN, z, np.ones(6, dtype=np.int64)
    )
    np.testing.assert_array_equal(images, direct.reshape(images.shape))
    prefix = npy(pclient.post("/generate", params={**query, "n": 2}))
    np.testing.assert_array_equal(prefix, images[:2])  # (seed, n) is a prefix of (seed, n + 4)


def test_labels_change_the_images_and_every_label_renders_each(pclient):
    one = npy(pclient.post("/generate", params={"label": 0, "n": 3, "seed": 4, "format": "npy"}))
    other = npy(pclient.post("/generate", params={"label": 3, "n": 3, "seed": 4, "format": "npy"}))
    assert not np.array_equal(one, other)
    every = npy(pclient.post("/v1/every-label", json={"seed": 4, "format": "npy"}))
    assert every.shape[0] == CLASSES
    np.testing.assert_array_equal(every[0], one[0])
    np.testing.assert_array_equal(every[3], other[0])


def test_bulk_gives_the_images_of_generate(pclient):
    response = pclient.post("/v1/bulk", json={"counts": {"2": 3}, "seed": 7})
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        x, y = archive["x"], archive["y"]
    assert y.tolist() == [2, 2, 2] and x.shape == (3, SIDE, SIDE)  # bulk drops the single channel
    assert len(np.unique(x.reshape(3, -1), axis=0)) == 3


@pytest.mark.parametrize(
    ("path", "body", "what"),
    [
        ("/v1/interpolate", {"start": {"seed": 1}, "end": {"seed": 2}, "label": 1}, "interpolation"),
        ("/v1/interpolate/labels", {"seed": 1, "start_label": 0, "end_label": 3}, "label morphing"),
        ("/v1/arithmetic", {"terms": [{"seeds": [1, 2]}]}, "latent arithmetic"),
        ("/v1/project", {"image": "AAAA"}, "projection"),
        ("/v1/edit", {"image": "AAAA"}, "projection"),
    ],
)
def test_latent_space_routes_are_422_saying_why(pclient, path, body, what):
    response = pclient.post(path, json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    message = error["detail"][0]["msg"]
    assert "'tiny-pixelcnn' is autoregressive: it has no latent space" in message and what in message
    assert "no latent space" in error["error"] and error["detail"][0]["allowed"]

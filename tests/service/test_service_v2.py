"""The Open Inference Protocol (KServe v2) routes, called with the official client (``tritonclient.http``)
on a real server: health, metadata, and inference with JSON and binary tensor data giving the very images
``POST /generate?format=npy`` gives for the same latents."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from service_support import MODEL_DIR, make_settings, serve_in_thread

from contracts.latents import request_latents
from contracts.model_dir import read_manifest
from service.main import create_app

http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MANIFEST = read_manifest(MODEL_DIR)
NAME, VERSION = MANIFEST.name, MANIFEST.version
LATENT, LABEL, OUTPUT = MANIFEST.inputs["latent"], MANIFEST.inputs["label"], MANIFEST.output.name


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(make_settings(max_steps=16)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator:
    client = http.InferenceServerClient(url=server.removeprefix("http://"))
    yield client
    client.close()


def _inputs(z: np.ndarray, labels: np.ndarray, binary: bool) -> list:
    inputs = [
        http.InferInput(LATENT, list(z.shape), "FP32"),
        http.InferInput(LABEL, list(labels.shape), "INT64"),
    ]
    inputs[0].set_data_from_numpy(z, binary_data=binary)
    inputs[1].set_data_from_numpy(labels, binary_data=binary)
    return inputs


def test_v2_health_and_metadata(client, server: str) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(NAME)
    assert client.is_model_ready(NAME, VERSION)
    assert not client.is_model_ready("no-such-model")
    server_metadata = client.get_server_metadata()
    assert "binary_tensor_data" in server_metadata["extensions"]
    metadata = client.get_model_metadata(NAME)
    assert metadata == client.get_model_metadata(NAME, VERSION)
    assert metadata["name"] == NAME and metadata["versions"] == [VERSION]
    assert metadata["platform"] == "onnxruntime_onnx"
    height, width, channels = MANIFEST.image_shape
    assert metadata["inputs"] == [
        {"name": LATENT, "datatype": "FP32", "shape": [-1, MANIFEST.latent_dim]},
        {"name": LABEL, "datatype": "INT64", "shape": [-1]},
    ]
    assert metadata["outputs"] == [
        {"name": OUTPUT, "datatype": "UINT8", "shape": [-1, height, width, channels]}
    ]
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no-such-model")
    assert caught.value.status() == "400" and "no-such-model" in caught.value.message()
    # the routes follow an external spec: they stay out of the service's OpenAPI document
    assert not [
        path for path in httpx.get(server + "/openapi.json").json()["paths"] if path.startswith("/v2")
    ]


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(False, False), (True, True), (False, True), (True, False)]
)
def test_v2_infer_matches_generate(client, server: str, binary_in: bool, binary_out: bool) -> None:
    seed, n, label = 1234, 5, 7
    answer = httpx.post(server + "/generate", params={"seed": seed, "n": n, "label": label, "format": "npy"})
    assert answer.status_code == 200, answer.text
    expected = np.load(io.BytesIO(answer.content))  # [n, H, W] for one channel: the npy drops the axis
    expected = expected.reshape(n, *MANIFEST.image_shape)
    z = request_latents(seed, n, MANIFEST.latent_dim)
    labels = np.full(n, label, dtype=np.int64)
    result = client.infer(
        NAME,
        _inputs(z, labels, binary_in),
        outputs=[http.InferRequestedOutput(OUTPUT, binary_data=binary_out)],
        request_id="req-1",
    )
    images = result.as_numpy(OUTPUT)
    assert images.dtype == np.uint8 and images.shape == expected.shape
    np.testing.assert_array_equal(images, expected)
    response = result.get_response()
    assert response["model_name"] == NAME and response["id"] == "req-1"
    assert ("data" in response["outputs"][0]) is not binary_out


def test_v2_infer_default_outputs_and_several_labels(client) -> None:
    """No outputs named: the client asks for all of them in binary (``binary_data_output``)."""
    z = request_latents(5, 3, MANIFEST.latent_dim)
    labels = np.array([0, 1, 2], dtype=np.int64)
    first = client.infer(NAME, _inputs(z, labels, True)).as_numpy(OUTPUT)
    again = client.infer(NAME, _inputs(z, labels, False), model_version=VERSION).as_numpy(OUTPUT)
    assert first.shape == (3, *MANIFEST.image_shape)
    np.testing.assert_array_equal(first, again)


def test_v2_infer_takes_labels_as_triton_batches_them(client) -> None:
    """label [N, 1], as a Triton model repository of the same graph (export.triton) takes it."""
    z = request_latents(11, 2, MANIFEST.latent_dim)
    labels = np.array([4, 9], dtype=np.int64)
    flat = client.infer(NAME, _inputs(z, labels, True)).as_numpy(OUTPUT)
    column = client.infer(NAME, _inputs(z, labels.reshape(2, 1), False)).as_numpy(OUTPUT)
    np.testing.assert_array_equal(flat, column)
    message = _refused(client, _inputs(z, labels.reshape(1, 2), True))
    assert repr(LABEL) in message and "[N, 1]" in message


def test_v2_routes_solve_no_dependency() -> None:
    """As every route of the service: the context is closed over, never injected."""
    from service.metrics import Metrics
    from service.model_repo import load_model_dir
    from service.routes import inference_protocol
    from service.routes.common import ServiceContext

    settings = make_settings()
    ctx = ServiceContext(load_model_dir(MODEL_DIR), settings, Metrics(settings.max_batch))
    routes = [
        *inference_protocol.build_router(ctx).routes,
        *inference_protocol.build_health_router(ctx).routes,
    ]
    assert len(routes) == 9
    assert [route.path for route in routes if route.dependant.dependencies] == []


def _refused(client, inputs: list, model: str = NAME) -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs)
    assert caught.value.status() == "400"
    return caught.value.message()


def test_v2_infer_refuses_bad_tensors(client) -> None:
    dim = MANIFEST.latent_dim
    z = request_latents(0, 2, dim)
    labels = np.zeros(2, dtype=np.int64)
    assert "no-such-model" in _refused(client, _inputs(z, labels, False), "no-such-model")
    wrong_dtype = [http.InferInput(LATENT, [2, dim], "FP64"), http.InferInput(LABEL, [2], "INT64")]
    wrong_dtype[0].set_data_from_numpy(z.astype(np.float64))
    wrong_dtype[1].set_data_from_numpy(labels)
    message = _refused(client, wrong_dtype)
    assert repr(LATENT) in message and "FP64" in message
    message = _refused(client, _inputs(request_latents(0, 2, dim + 1), labels, True))
    assert repr(LATENT) in message and "shape" in message
    message = _refused(client, _inputs(z, np.zeros(3, dtype=np.int64), False))
    assert repr(LABEL) in message
    message = _refused(client, _inputs(z, np.array([0, MANIFEST.num_classes], dtype=np.int64), True))
    assert repr(LABEL) in message and str(MANIFEST.num_classes - 1) in message
    message = _refused(client, _inputs(z, labels, False)[:1])
    assert repr(LABEL) in message and "missing" in message
    nan = z.copy()
    nan[0, 0] = np.nan
    assert repr(LATENT) in _refused(client, _inputs(nan, labels, True))


def test_v2_raw_protocol_errors(server: str) -> None:
    """Bodies the client library never sends: the error shape is always ``{"error": ...}``."""
    url = f"{server}/v2/models/{NAME}/infer"
    dim = MANIFEST.latent_dim
    header = {
        "inputs": [
            {
                "name": LATENT,
                "datatype": "FP32",
                "shape": [1, dim],
                "parameters": {"binary_data_size": 4 * dim},
            },
            {"name": LABEL, "datatype": "INT64", "shape": [1], "data": [3]},
        ],
        "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}],
    }
    text = json.dumps(header).encode()
    z = request_latents(9, 1, dim).tobytes()
    answer = httpx.post(url, content=text + z, headers={"Inference-Header-Content-Length": str(len(text))})
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["Inference-Header-Content-Length"])
    described = json.loads(answer.content[:length])
    assert described["outputs"][0]["parameters"]["binary_data_size"] == len(answer.content) - length
    length_is = {"Inference-Header-Content-Length": str(len(text))}
    too_long = {"Inference-Header-Content-Length": str(len(text) + len(z) + 1)}
    unknown = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}]}
    for body, headers, words in [
        (b"{not json", {}, ["JSON"]),
        (text + z[:-4], length_is, [repr(LATENT), "bytes"]),
        (text + z + b"xx", length_is, ["binary data"]),
        (text + z, too_long, ["Header-Content-Length"]),
        (json.dumps(unknown).encode(), {}, ["'x'"]),
    ]:
        answer = httpx.post(url, content=body, headers=headers)
        assert answer.status_code == 400, (body[:80], answer.text)
        error = answer.json()["error"]
        assert set(answer.json()) == {"error"} and all(word in error for word in words), error
    nested = {
        "inputs": [
            {"name": LATENT, "datatype": "FP32", "shape": [1, dim], "data": [[0.5] * dim]},
            {"name": LABEL, "datatype": "INT64", "shape": [1], "data": [1.5]},
        ]
    }
    answer = httpx.post(url, json=nested)
    assert answer.status_code == 400 and repr(LABEL) in answer.json()["error"]
    nested["inputs"][1]["data"] = [1]
    answer = httpx.post(url, json=nested)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"] == [1, *MANIFEST.image_shape]


def test_v2_not_ready_before_warm_up() -> None:
    """Readiness is the service's own: no batcher yet (the lifespan has not run) → not ready, yet live."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(make_settings()))  # not entered: the lifespan never starts
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get(f"/v2/models/{NAME}/ready").status_code == 503
    assert client.get("/v2/models/other/ready").json() == {
        "error": "unknown model 'other': this server serves " + repr(NAME)
    }

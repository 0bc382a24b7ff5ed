"""Two tiers: a front end with ``GAN_INFERENCE_URL`` (only manifest.json on its disk) whose batches run on a
real `gan-serve` backend over the Open Inference Protocol. The same seed gives the same bytes as the local
runtime; a backend that dies or stalls gives 503 + Retry-After and readiness false, then recovers; a backend
whose model disagrees with the manifest is refused at start, in one line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from service_support import (
    MODEL_DIR,
    REPO_ROOT,
    free_port,
    make_settings,
    running_server,
    serve_in_process,
    serve_in_thread,
)

from service.main import open_runtime
from service.model_repo import load_model_dir
from service.remote_runtime import card_problems, metadata_problems

SPEC = load_model_dir(MODEL_DIR)
MODEL = SPEC.manifest.name
WAIT_S = 60.0  # generous: the CPUs may be busy; nothing here asserts a duration


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def manifest_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The front end's model directory: manifest.json and nothing else (no graph)."""
    directory = tmp_path_factory.mktemp("front") / "model"
    directory.mkdir()
    shutil.copy(MODEL_DIR / "manifest.json", directory)
    return directory


def backend(port: int | None = None) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen]]:
    """A real `gan-serve` subprocess (the local runtime); yields its URL and process."""
    return running_server(port, drain_s=0)


@pytest.fixture(scope="module")
def backend_url() -> Iterator[str]:
    with backend() as (url, _):
        yield url


def front_settings(manifest_dir: Path, url: str, **overrides):
    values = {"inference_probe_s": 0.2, "inference_timeout_s": 5.0, "inference_start_timeout_s": 30.0}
    return make_settings(model_dir=manifest_dir, inference_url=url, **values | overrides)


@pytest.fixture(scope="module")
def front(manifest_only: Path, backend_url: str):
    with serve_in_process(front_settings(manifest_only, backend_url), open_runtime) as client:
        yield client


@pytest.fixture(scope="module")
def local():
    with serve_in_process(make_settings()) as client:
        yield client


@pytest.mark.parametrize(
    "query",
    [
        "label=7&seed=1",
        "label=3&n=16&seed=42",
        "label=0&n=5&seed=9&format=npy",
        "label=5&n=3&seed=0&truncation=0.5",
    ],
)
def test_remote_gives_the_same_bytes_as_local(front, local, query):
    remote, here = front.post(f"/generate?{query}"), local.post(f"/generate?{query}")
    assert remote.status_code == here.status_code == 200, remote.text
    assert remote.content == here.content


def test_bulk_through_the_backend_gives_the_same_archive(front, local):
    body = {"n": 300, "weights": {"3": 1, "8": 2}, "seed": 5}  # two chunks of 256
    remote, here = front.post("/v1/bulk", json=body), local.post("/v1/bulk", json=body)
    assert remote.status_code == here.status_code == 200, remote.text
    assert remote.content == here.content


def test_models_and_metrics_say_what_runs(front, backend_url):
    (card,) = front.get("/v1/models").json()
    assert card["providers"] == [f"remote: {backend_url} model {MODEL}"]
    assert card["intra_op_threads"] is None and card["label_interpolation"] is False
    assert card["bulk_inference_streams"] == 1  # the backend's cores are not this process's to fill
    assert card["sha256"] == SPEC.main.sha256
    assert f'provider="remote: {backend_url} model {MODEL}"' in front.get("/metrics").text


def test_label_morphing_is_501_naming_the_remote_backend(front):
    body = {"start_label": 1, "end_label": 7, "steps": 4, "seed": 1}
    response = front.post("/v1/interpolate/labels", json=body)
    assert response.status_code == 501
    assert "GAN_INFERENCE_URL" in response.json()["error"]


def test_the_front_ends_own_v2_answers_as_the_backend(front, backend_url):
    z = np.random.default_rng(0).standard_normal((3, SPEC.latent_dim)).astype(np.float32)
    request = {
        "inputs": [
            {"name": "z", "datatype": "FP32", "shape": [3, SPEC.latent_dim], "data": z.ravel().tolist()},
            {"name": "label", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]},
        ]
    }
    path = f"/v2/models/{MODEL}/infer"
    remote, direct = front.post(path, json=request), httpx.post(backend_url + path, json=request)
    assert remote.status_code == direct.status_code == 200
    assert remote.json()["outputs"] == direct.json()["outputs"]


def test_a_dead_backend_gives_503_and_unready_then_recovers(manifest_only, local, caplog):
    caplog.set_level(logging.INFO)
    port = free_port()
    with (
        backend(port) as (url, process),
        serve_in_process(front_settings(manifest_only, url), open_runtime) as front,
    ):
        assert front.post("/generate?label=2&seed=3").status_code == 200
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        failed = front.post("/generate?label=2&seed=3")
        assert failed.status_code == 503 and failed.headers["Retry-After"] == "1", failed.text
        assert url in failed.json()["error"]
        wait_for(lambda: front.get("/readyz").status_code == 503)
        assert front.get("/v2/health/ready").status_code == 503
        assert front.get("/healthz").status_code == 200  # alive: a restart of the front end would not help
        assert front.get("/readyz").headers["Retry-After"] == "1"
        again = front.post("/generate?label=2&seed=3")  # refused at once while marked down
        assert again.status_code == 503 and again.headers["Retry-After"] == "1"
        bulk = front.post("/v1/bulk", json={"n": 10, "seed": 0})  # its status line waits for its first chunk
        assert bulk.status_code == 503 and bulk.headers["Retry-After"] == "1"
        with backend(port):  # the backend comes back on the same address
            wait_for(lambda: front.get("/readyz").status_code == 200)
            recovered = front.post("/generate?label=2&seed=3")
            assert recovered.status_code == 200
            assert recovered.content == local.post("/generate?label=2&seed=3").content
    # the outage is said where it begins and ends, not as a traceback for every batch refused meanwhile
    assert not [r for r in caplog.records if r.exc_info and "inference failed" in r.getMessage()]
    assert any("not ready until it is" in r.getMessage() for r in caplog.records)


# --- stub backends: metadata as the test wants it, inference as slow as it wants


def stub_backend(metadata: dict, delay: dict[str, float] | None = None) -> FastAPI:
    """An Open Inference Protocol server that serves ``metadata`` and answers infer with black images after
    ``delay["s"]`` seconds (read on each call, so a test can slow it down after warm-up)."""
    app = FastAPI()
    delay = delay if delay is not None else {"s": 0.0}

    @app.get("/v2")
    async def server() -> dict:
        return {"name": "stub", "version": "0", "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/ready")
    @app.get(f"/v2/models/{MODEL}/ready")
    async def ready() -> Response:
        return Response(status_code=200)

    @app.get(f"/v2/models/{MODEL}")
    async def model() -> dict:
        return metadata

    @app.post(f"/v2/models/{MODEL}/infer")
    async def infer(request: Request) -> Response:
        import asyncio

        await asyncio.sleep(delay["s"])
        length = int(request.headers["Inference-Header-Content-Length"])
        header = json.loads((await request.body())[:length])
        n = header["inputs"][0]["shape"][0]
        images = np.zeros((n, *SPEC.image_shape), dtype=np.uint8)
        output = {"name": "image", "datatype": "UINT8", "shape": list(images.shape)}
        answer = json.dumps({"outputs": [output | {"parameters": {"binary_data_size": images.nbytes}}]})
        headers = {"Inference-Header-Content-Length": str(len(answer))}
        return Response(answer.encode() + images.tobytes(), headers=headers)

    @app.exception_handler(Exception)
    async def _error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=500)

    return app


def metadata_like_triton(latent_dim: int = SPEC.latent_dim) -> dict:
    """What Triton answers for the repository ``gan-export --triton-repo`` writes (label [N, 1])."""
    height, width, channels = SPEC.image_shape
    return {
        "name": MODEL,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "z", "datatype": "FP32", "shape": [-1, latent_dim]},
            {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
        ],
        "outputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, height, width, channels]}],
    }


@contextlib.contextmanager
def serve_stub(app: FastAPI) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url))
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/v2").status_code == 200
    except httpx.TransportError:
        return False


def test_a_slow_backend_gives_503_not_a_hang_then_recovers(manifest_only):
    delay = {"s": 0.0}
    with serve_stub(stub_backend(metadata_like_triton(), delay)) as url:
        settings = front_settings(manifest_only, url, inference_timeout_s=0.5, inference_probe_s=0.2)
        with serve_in_process(settings, open_runtime) as front:  # warmed up through the stub
            assert front.post("/generate?label=1&seed=1").status_code == 200
            delay["s"] = 5.0
            slow = front.post("/generate?label=1&seed=1")
            assert slow.status_code == 503 and slow.headers["Retry-After"] == "1"
            assert "GAN_INFERENCE_TIMEOUT_S" in slow.json()["error"]
            delay["s"] = 0.0  # the probe (its readiness route was never slow) makes it ready again
            wait_for(lambda: front.get("/readyz").status_code == 200)
            assert front.post("/generate?label=1&seed=1").status_code == 200


def gan_serve(manifest_dir: Path, url: str, **env: str) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "GAN_MODEL_DIR": str(manifest_dir),
        "GAN_INFERENCE_URL": url,
        "GAN_ACCESS_LOG": "false",
        "GAN_LOG_LEVEL": "warning",
        **env,
    }
    command = [sys.executable, "-m", "service.cli", "--port", "0"]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=environ, timeout=180)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gan-serve: refusing to start: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_backend_with_another_latent_size_is_refused_in_one_line(manifest_only):
    with serve_stub(stub_backend(metadata_like_triton(latent_dim=SPEC.latent_dim + 1))) as url:
        result = gan_serve(manifest_only, url)
    expected = f"is FP32 [-1, {SPEC.latent_dim + 1}], the manifest implies FP32 [-1, {SPEC.latent_dim}]"
    assert_refused(result, url, "disagrees with the manifest", "input 'z'", expected)


def test_an_unreachable_backend_is_refused_after_the_start_timeout(manifest_only):
    url = f"http://127.0.0.1:{free_port()}"
    result = gan_serve(manifest_only, url, GAN_INFERENCE_START_TIMEOUT_S="1")
    assert_refused(result, url, "no answer", "GAN_INFERENCE_START_TIMEOUT_S")


def test_a_triton_style_signature_agrees_and_others_do_not():
    assert metadata_problems(SPEC, metadata_like_triton()) == []
    renamed = metadata_like_triton()
    renamed["outputs"][0]["name"] = "images"
    assert metadata_problems(SPEC, renamed) == ["no output 'image' (UINT8 [-1, 28, 28, 1] in the manifest)"]
    wrong_type = metadata_like_triton()
    wrong_type["inputs"][1]["datatype"] = "INT32"
    (problem,) = metadata_problems(SPEC, wrong_type)
    assert "input 'label' is INT32" in problem


def test_a_gan_serve_backend_must_run_the_same_graph_and_labels():
    card = {"labels": SPEC.manifest.labels, "conditional": True, "sha256": SPEC.main.sha256}
    assert card_problems(SPEC, card) == []
    problems = card_problems(SPEC, card | {"sha256": "0" * 64, "labels": ["a", "b"]})
    assert len(problems) == 2 and "sha256" in problems[1] and "labels" in problems[0]


def test_serve_in_thread_front_end_over_a_real_socket(manifest_only, backend_url):
    """The front end as uvicorn serves it (not only the test client): a PNG through both tiers."""
    with serve_in_thread(front_settings(manifest_only, backend_url), open_runtime) as url:
        response = httpx.post(url + "/generate?label=4&seed=11")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def test_an_inference_url_that_is_no_http_url_is_refused_naming_the_variable(manifest_only):
    result = gan_serve(manifest_only, "triton:8000")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("gan-serve: invalid settings: GAN_INFERENCE_URL") and "http://" in line, line


def test_a_backend_that_needs_an_api_key_gets_the_one_configured(manifest_only, local):
    """A gan-serve backend with GAN_API_KEYS: a front end without GAN_INFERENCE_API_KEY is refused at start
    in one line (401, not a wait for the start timeout); with the key it serves the same bytes."""
    with running_server(None, drain_s=0, api_keys="backend-secret") as (url, _):
        refused = gan_serve(manifest_only, url, GAN_INFERENCE_START_TIMEOUT_S="30")
        settings = front_settings(manifest_only, url, inference_api_key="backend-secret")
        with serve_in_process(settings, open_runtime) as front:
            answer = front.post("/generate?label=4&seed=2")
    assert_refused(refused, url, "refused (401")
    assert answer.status_code == 200, answer.text
    assert answer.content == local.post("/generate?label=4&seed=2").content

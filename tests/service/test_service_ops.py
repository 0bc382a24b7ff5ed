"""Ops endpoints, request ids, access logs, API keys, settings, and refusing bad model directories."""

from __future__ import annotations

import gc
import inspect
import json
import logging
import subprocess
import sys
import time

import pytest
from pydantic import ValidationError
from service_support import MODEL_DIR, REPO_ROOT, make_settings, serve_in_process

from contracts import native_latents
from contracts.model_dir import ModelDirError
from service.config import Settings
from service.main import create_app
from service.model_repo import load_model_dir

SPEC = load_model_dir(MODEL_DIR)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            sample, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in sample for k, v in labels.items()):
                return float(value)
    return 0.0


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_startup_heap_is_frozen_out_of_the_cyclic_collector():
    """A full collection over the start-up heap held every request in the process 25-115 ms at 64 clients;
    after start-up it is frozen, so later full collections walk only what requests left behind."""
    from fastapi.testclient import TestClient

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 0


def test_readiness_is_503_until_every_bucket_is_warm(gated):
    from fastapi.testclient import TestClient

    settings = make_settings(bulk_inference_streams=2)  # a bulk-only stream: its larger sizes warmed too

    def closed_gate_factory(spec, settings):
        runtime = gated(spec, settings)
        runtime.warm = True  # hold even the warm-up calls at the gate
        runtime.gate.clear()
        return runtime

    with TestClient(create_app(settings, closed_gate_factory)) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "warming up"
        assert "Retry-After" in response.headers
        gated.runtime.gate.set()
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    warmed = sorted({size for _, size, _ in gated.runtime.calls})
    assert warmed == [*settings.buckets, *settings.bulk_buckets] and settings.bulk_buckets


def test_models_lists_the_contract_fields(client):
    [model] = client.get("/v1/models").json()
    manifest = SPEC.manifest
    assert model["name"] == manifest.name and model["version"] == manifest.version
    assert model["num_classes"] == manifest.num_classes and model["labels"] == manifest.labels
    assert model["latent_dim"] == manifest.latent_dim and model["image_shape"] == list(manifest.image_shape)
    assert model["sha256"] == manifest.sha256
    assert model["latent_sampler"] == native_latents.SAMPLER
    assert model["interactive_batches"] == "thread"  # as the tests' settings ask
    assert (
        model["ort_call_max_rows"] == model["max_batch"]
    )  # on the CPU: larger batches in calls of max_batch


def test_without_the_compiled_latents_the_service_says_so_and_serves_the_same_images(
    client, monkeypatch, caplog
):
    """Where the install found no C compiler, NumPy draws the latents: the same bytes, said at start-up and
    in /v1/models."""
    from fastapi.testclient import TestClient

    params = {"label": 3, "n": 20, "seed": 41, "format": "npy"}
    native = client.post("/generate", params=params)
    monkeypatch.setattr(native_latents, "AVAILABLE", False)
    monkeypatch.setattr(native_latents, "SAMPLER", "numpy")
    monkeypatch.setattr(native_latents, "UNAVAILABLE_BECAUSE", "not built (a test)")
    app = create_app(make_settings())
    with caplog.at_level(logging.WARNING, logger="service.main"), TestClient(app) as numpy_client:
        [model] = numpy_client.get("/v1/models").json()
        drawn = numpy_client.post("/generate", params=params)
    assert model["latent_sampler"] == "numpy"
    assert "latents drawn with NumPy, holding the interpreter lock: not built (a test)" in caplog.text
    assert native.status_code == drawn.status_code == 200 and native.content == drawn.content


def test_metrics_report_requests_batches_queue_and_images(client):
    client.post("/generate", params={"label": 1, "n": 3, "seed": 0})
    text = client.get("/metrics").text
    assert metric_value(text, "gan_http_requests_total", endpoint="/generate", status="200") >= 1
    assert metric_value(text, "gan_http_request_duration_seconds_count", endpoint="/generate") >= 1
    assert metric_value(text, "gan_batch_size_count") >= 1
    assert metric_value(text, "gan_images_generated_total", lane="interactive") >= 3
    assert metric_value(text, "gan_request_queue_wait_seconds_count", lane="interactive") >= 1
    assert metric_value(text, "gan_request_compute_seconds_count", lane="interactive") >= 1
    assert "gan_queue_depth_images" in text and metric_value(text, "gan_ready") == 1


def test_request_id_is_echoed_or_made(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32 and int(made, 16) >= 0
    assert client.get("/healthz").headers["X-Request-ID"] != made
    unsafe = client.get("/healthz", headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"]
    assert unsafe != "x" * 500
    assert client.post("/generate", params={"label": 99}).headers["X-Request-ID"]


def test_access_log_is_json_without_secrets(caplog):
    settings = make_settings(access_log=True, api_keys="s3cret-key")
    with caplog.at_level(logging.INFO, logger="service.access"), serve_in_process(settings) as client:
        caplog.clear()
        client.post(
            "/generate",
            params={"label": 2, "seed": 5},
            headers={"X-API-Key": "s3cret-key", "X-Request-ID": "req-1"},
        )
    [record] = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "req-1"]
    from service.logs import JsonFormatter

    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["status"] == 200 and entry["endpoint"] == "/generate" and entry["query"] == "label=2&seed=5"
    assert entry["duration_ms"] > 0
    assert "s3cret-key" not in caplog.text and "s3cret-key" not in line


def test_body_too_large_is_413(client):
    response = client.post(
        "/v1/generate", content=b"{" + b" " * (2 << 20) + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_unknown_path_is_404_and_counted(client):
    assert client.get("/nope").status_code == 404
    assert metric_value(client.get("/metrics").text, "gan_http_requests_total", endpoint="unmatched") >= 1


# --- API keys


def test_api_keys_guard_work_but_not_health():
    settings = make_settings(api_keys="alpha,beta")
    with serve_in_process(settings) as client:
        assert client.post("/generate", params={"label": 1}).status_code == 401
        assert (
            client.post("/generate", params={"label": 1}, headers={"X-API-Key": "wrong"}).status_code == 401
        )
        assert client.post("/generate", params={"label": 99}).status_code == 401  # before validation
        assert client.get("/v1/models").status_code == 401
        assert client.post("/generate", params={"label": 1}, headers={"X-API-Key": "beta"}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
        text = client.get("/metrics").text
        assert (
            metric_value(text, "gan_images_generated_total", lane="interactive") == 1
        )  # 401s queued nothing
        assert metric_value(text, "gan_http_requests_total", endpoint="/generate", status="401") == 3


def test_openapi_documents_the_key_only_when_keys_are_set():
    def schemes(settings):
        schema = create_app(settings).openapi()
        return schema.get("components", {}).get("securitySchemes", {}), schema["paths"]["/generate"]["post"]

    documented, operation = schemes(make_settings(api_keys="k"))
    assert [s["name"] for s in documented.values()] == ["X-API-Key"] and operation["security"]
    documented, operation = schemes(make_settings())
    assert documented == {} and "security" not in operation


def test_ops_can_require_keys_too():
    with serve_in_process(
        make_settings(api_keys="k", public_ops=False), headers={"X-API-Key": "k"}
    ) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "k"}).status_code == 200


# --- settings and model directories


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("GAN_API_KEYS", "key-alpha-9, key-beta-7")
    monkeypatch.setenv("GAN_BATCH_BUCKETS", "8,32")
    monkeypatch.setenv("GAN_MAX_BATCH", "64")
    settings = Settings(_env_file=None)
    assert [k.get_secret_value() for k in settings.api_keys] == ["key-alpha-9", "key-beta-7"]
    assert "key-alpha-9" not in repr(settings)
    assert settings.buckets == (8, 32, 64)
    assert Settings(_env_file=None, max_batch=48, batch_buckets=[]).buckets == (1, 2, 4, 8, 16, 32, 48)


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_n": 512},
        {"max_n": 2048, "max_queue_images": 1024},
        {"batch_buckets": "128", "max_batch": 64},
        {"max_batch": 0},
        {"device": "tpu"},
        {"interactive_batches": "loop", "inference_url": "http://triton:8000"},  # a blocked loop per call
        {"interactive_batches": "sometimes"},
    ],
)
def test_inconsistent_settings_are_refused(overrides):
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **overrides)


def test_sha256_mismatch_is_refused(model_copy):
    with open(model_copy / SPEC.manifest.file, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelDirError, match="sha256 mismatch"):
        create_app(make_settings(model_dir=model_copy))


def test_manifest_problems_are_refused(model_copy):
    path = model_copy / "manifest.json"
    original = json.loads(path.read_text())
    cases = [
        ({**original, "file": "../model.onnx"}, "must be a file name inside the model directory"),
        ({**original, "labels": ["a"]}, "num_classes"),
        ({k: v for k, v in original.items() if k != "latent_dim"}, "latent_dim"),
        ({**original, "inputs": {"latent": "z"}}, "inputs"),
    ]
    for manifest, message in cases:
        path.write_text(json.dumps(manifest))
        with pytest.raises(ModelDirError, match=message):
            load_model_dir(model_copy)
    path.write_text("{not json")
    with pytest.raises(ModelDirError, match="not readable JSON"):
        load_model_dir(model_copy)
    with pytest.raises(ModelDirError, match="not found"):
        load_model_dir(model_copy / "missing")
    path.write_text(json.dumps(original))
    with pytest.raises(ModelDirError, match="no variant"):
        load_model_dir(model_copy, variant="int4")


def test_graph_that_disagrees_with_its_manifest_is_refused(model_copy):
    from service.runtime import Runtime

    path = model_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "latent_dim": manifest["latent_dim"] + 1}))
    with pytest.raises(ModelDirError, match="latent"):
        Runtime(load_model_dir(model_copy), make_settings(model_dir=model_copy))


def test_gan_serve_refuses_a_bad_model_with_a_clear_message(model_copy):
    (model_copy / SPEC.manifest.file).write_bytes(b"not a model")
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "--model-dir", str(model_copy), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "sha256 mismatch" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_app_never_imports_torch():
    code = (
        "import sys, service.main, service.cli, service.client\n"
        "service.main.create_app()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env_model = {"GAN_MODEL_DIR": str(MODEL_DIR)}
    import os

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **env_model},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_a_manifest_variant_can_be_served(model_copy):
    from contracts.files import sha256_file

    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(model_copy / SPEC.manifest.file))
    graph.doc_string = "the same graph under another name and hash"
    onnx.save(graph, str(model_copy / "model.alt.onnx"))
    path = model_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["variants"] = {
        "alt": {"file": "model.alt.onnx", "sha256": sha256_file(model_copy / "model.alt.onnx")}
    }
    path.write_text(json.dumps(manifest))
    with serve_in_process(make_settings(model_dir=model_copy, model_variant="alt")) as client:
        [model] = client.get("/v1/models").json()
        assert model["variant"] == "alt" and model["sha256"] == manifest["variants"]["alt"]["sha256"]
        assert model["sha256"] != SPEC.manifest.sha256
        assert client.post("/generate", params={"label": 1}).status_code == 200


def test_routes_solve_no_dependency_but_the_key_check_which_runs_on_the_loop():
    from service.auth import api_key_dependencies
    from service.metrics import Metrics
    from service.routes import arithmetic, bulk, generate, interpolate, models, ops
    from service.routes.common import ServiceContext

    settings = make_settings(api_keys="k")
    ctx = ServiceContext(SPEC, settings, Metrics(settings.max_batch))
    routes = [
        route
        for m in (generate, interpolate, arithmetic, bulk, models, ops)
        for route in m.build_router(ctx).routes
    ]
    # the context is closed over, not injected: FastAPI solves every dependency on every request
    assert [route.path for route in routes if route.dependant.dependencies] == []
    [key_check] = api_key_dependencies(settings)
    # a coroutine: FastAPI would run a plain ``def`` dependency in its thread pool
    assert inspect.iscoroutinefunction(key_check.dependency.__call__)

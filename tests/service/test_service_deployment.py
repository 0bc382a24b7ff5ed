"""What an operator relies on: the service reports what really runs (providers, threads), refuses to start on
a device it cannot use instead of silently serving on the CPU, sizes its threads from the CPU quota it really
has, and lets an orchestrator restart a process whose warm-up failed."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest
from service_support import MODEL_DIR, REPO_ROOT, make_settings, serve_in_process

from service import runtime
from service.model_repo import load_model_dir
from service.runtime import (
    CPU,
    CUDA,
    Runtime,
    StartupError,
    available_cores,
    cgroup_cpu_limit,
    installed_runtimes,
)

SPEC = load_model_dir(MODEL_DIR)


class WarmUpFails(Runtime):
    def run(self, kind, z, condition):
        raise RuntimeError("the accelerator fell off the bus")


def test_a_failed_warm_up_makes_liveness_fail_so_the_process_is_restarted():
    from fastapi.testclient import TestClient

    from service.main import create_app

    with TestClient(create_app(make_settings(), WarmUpFails)) as client:
        deadline = time.monotonic() + 30
        while "warm-up failed" not in client.get("/readyz").json()["status"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.get("/readyz").status_code == 503
        health = client.get("/healthz")
        assert health.status_code == 503 and "the accelerator fell off the bus" in health.json()["status"]


def test_a_healthy_process_is_alive_while_it_warms_up_and_after(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_models_and_metrics_report_the_session_as_it_runs(client):
    [model] = client.get("/v1/models").json()
    assert model["providers"] == [CPU] and model["intra_op_threads"] >= 1
    cores = available_cores()
    assert model["bulk_inference_streams"] == max(1, cores // model["intra_op_threads"])
    further = model["bulk_inference_streams"] > 1  # bulk-only streams run larger batches than the first
    assert model["bulk_max_batch"] == (256 if further else model["max_batch"]) and model["max_batch"] == 64
    metrics = client.get("/metrics").text
    expected = (
        f'gan_model_info{{intra_op_threads="{model["intra_op_threads"]}",model="{model["name"]}",'
        f'provider="{CPU}",version="{model["version"]}"}} 1.0'
    )
    assert expected in metrics
    assert "process_resident_memory_bytes" in metrics and "process_cpu_seconds_total" in metrics


def test_exactly_one_runtime_wheel_is_installed_here():
    assert len(installed_runtimes()) == 1, installed_runtimes()


def test_both_runtime_wheels_in_one_environment_are_refused(monkeypatch):
    monkeypatch.setattr(runtime, "installed_runtimes", lambda: ["onnxruntime", "onnxruntime-gpu"])
    with pytest.raises(StartupError, match="both onnxruntime and onnxruntime-gpu are installed"):
        Runtime(SPEC, make_settings())


def test_cuda_asked_for_without_the_provider_is_refused():
    if CUDA in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    with pytest.raises(StartupError, match="GAN_DEVICE=cuda but ONNX Runtime offers only"):
        Runtime(SPEC, make_settings(device="cuda"))


@pytest.fixture
def cuda_that_will_not_load(monkeypatch):
    """ONNX Runtime lists the CUDA provider but the session falls back to the CPU, as onnxruntime-gpu does
    when the CUDA libraries it needs are missing (here: a CPU build asked for CUDA does exactly that)."""
    available = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, *available])


def test_a_cuda_provider_that_falls_back_to_the_cpu_is_refused(cuda_that_will_not_load):
    with pytest.raises(StartupError, match=r"could not start its CUDA provider for model\.onnx"):
        Runtime(SPEC, make_settings(device="cuda"))


def test_auto_serves_on_the_cpu_when_cuda_does_not_load_and_says_so(cuda_that_will_not_load, caplog):
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        runtime = Runtime(SPEC, make_settings(device="auto"))
    assert runtime.requested == [CUDA, CPU] and runtime.providers == [CPU]
    assert "serving on the CPU" in caplog.text
    with serve_in_process(make_settings(device="auto"), lambda spec, settings: runtime) as client:
        assert client.get("/v1/models").json()[0]["providers"] == [CPU]


@pytest.mark.parametrize("workers", [1, 2])
def test_gan_serve_refuses_cuda_it_cannot_use_with_a_clear_line(workers):
    if CUDA in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    command = [sys.executable, "-m", "service.cli", "--model-dir", str(MODEL_DIR), "--device", "cuda"]
    result = subprocess.run(
        [*command, "--workers", str(workers), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "gan-serve: refusing to start: GAN_DEVICE"
    )


def _cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),  # cgroup v2, 2 CPUs
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),  # no quota
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_the_cpu_quota_is_read_from_the_cgroup(tmp_path, files, limit):
    assert cgroup_cpu_limit(_cgroup(tmp_path, files)) == limit


def test_threads_follow_the_quota_not_the_node(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))  # a 64-core node
    assert available_cores(_cgroup(tmp_path, {"cpu.max": "150000 100000\n"})) == 2  # 1.5 CPUs: 2 threads
    assert available_cores(_cgroup(tmp_path / "none", {})) == 64

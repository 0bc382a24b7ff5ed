"""gan-bench's composition on a hand-made run (the limit uses the model at max_batch on the sweep of the
service's thread setting, one PNG and the framework ceiling; the batch sizes formed are reported beside), the
ratios to the naive peer, its markdown, its flag errors, and the naive peer itself."""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest

from contracts import latents
from loadtest import benchmark, server
from loadtest.bench_report import render_markdown
from loadtest.run import duration_seconds


def level(concurrency: int, rps: float, p99: float, histogram: dict[str, float], images: float) -> dict:
    return {
        "concurrency": concurrency,
        "rps": rps,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "errors": 0,
        "server_cpu_ms_per_request": 2.0,
        "cpu": {
            "client_cores": 0.1,
            "server_event_loop_cores": 0.5,
            "server_other_threads_cores": 0.8,
            "other_processes_cores": 0.25,
        },
        "server": {
            "batch_histogram": histogram,
            "batched_images": images,
            "mean_batch": images / 2,
            "inference_ms_per_image": 0.6,
        },
    }


def report() -> dict:
    sweep0 = {
        "1": {"ms_per_batch": 1.0, "images_per_s": 1000.0, "cpu_ms_per_batch": 2.0, "calls": 9},
        "8": {"ms_per_batch": 4.0, "images_per_s": 2000.0, "cpu_ms_per_batch": 8.0, "calls": 9},
    }
    sweep1 = {
        "1": {"ms_per_batch": 2.0, "images_per_s": 500.0, "cpu_ms_per_batch": 2.0, "calls": 9},
        "8": {"ms_per_batch": 8.0, "images_per_s": 1000.0, "cpu_ms_per_batch": 8.0, "calls": 9},
    }
    return {
        "command": "gan-bench --test",
        "started": "2026-01-01T00:00:00+00:00",
        "machine": {
            "cpu_count": 2,
            "platform": "linux",
            "python": "3.11",
            "onnxruntime": "1",
            "providers": ["CPU"],
            "load_average_at_start": [1.0, 1.0, 1.0],
            "load_average_at_end": [2.0, 1.0, 1.0],
        },
        "note": "shared machine",
        "model": {
            "name": "m",
            "version": "1",
            "sha256": "0" * 64,
            "latent_dim": 8,
            "image_shape": [28, 28, 1],
            "placeholder": False,
        },
        "service_settings": {"max_batch": 8},
        "peers": {
            "naive": [{**level(64, 300.0, 100.0, {}, 0.0), "rps": 400.0}, {**level(8, 500.0, 9.0, {}, 0.0)}],
            "frameworks": [{"name": "Ray Serve", "status": "not installed"}],
        },
        "ort": {"cpu": {"0": sweep0, "1": sweep1}, "gpu": {"available": False, "note": "no GPU available"}},
        "encoding": {
            "png_ms_per_image": 0.1,
            "latent_ms_per_request": 0.05,
            "png_cpu_ms_per_image": 0.1,
            "latent_cpu_ms_per_request": 0.05,
        },
        "framework": {
            "trivial_route": {"rps": 2000.0, "server_cpu_ms_per_request": 0.25},
            "service_healthz": {"rps": 1500.0},
        },
        # two batches of 8 (16 images) and two of 1: (2 * 4 ms + 2 * 1 ms) / 18 images
        "service": {
            "batching_on": [
                level(8, 400.0, 20.0, {"8": 50.0}, 400.0),
                level(64, 600.0, 200.0, {"1": 2.0, "8": 2.0}, 18.0),
            ],
            "batching_off": [level(64, 300.0, 400.0, {"1": 300.0}, 300.0)],
        },
        "bulk": {
            "v1_bulk_npz": {"images_per_s": 1500.0, "errors": 0},
            "generate_npy_1024": {"images_per_s": 1200.0, "errors": 0},
        },
    }


def test_compose_uses_the_model_at_max_batch_and_the_service_thread_setting() -> None:
    args = argparse.Namespace(compose_at=64, max_batch=8)
    data = report()
    composed = benchmark.compose(data, args)
    model_s = 0.004 / 8  # one batch of max_batch=8 takes 4 ms
    # framework + model + one PNG over the 2 cores; latents are not in it
    expected = 1 / (1 / 2000 + model_s + 0.0001 / 2)
    assert composed["limit"]["model_s"] == pytest.approx(model_s)
    assert composed["model_s_at_formed_batches"] == pytest.approx((2 * 0.004 + 2 * 0.001) / 18)
    assert composed["limit"]["rps"] == pytest.approx(expected)
    assert composed["share_of_limit"] == pytest.approx(600 / expected)
    assert composed["batching_ratio"] == pytest.approx(2.0)
    targets = composed["targets"]
    assert targets["single_p99_ms"] == {"target": 100.0, "measured": 200.0, "met": False}
    assert targets["bulk_share_of_peak_ort"]["measured"] == pytest.approx(0.75)
    assert targets["vs_naive_at_64"] == {"target": 1.5, "measured": 1.5, "met": True}
    assert targets["vs_naive_at_8"] == {"target": 1.0, "measured": 0.8, "met": False}
    # in CPU time: 0.25 ms framework + 8 ms / 8 images + 0.1 ms PNG
    cpu_parts_ms = 0.25 + 8 / 8 + 0.1
    assert composed["cpu"]["parts"]["seconds_per_request"] * 1000 == pytest.approx(cpu_parts_ms)
    assert composed["cpu"]["parts_share_of_service"] == pytest.approx(cpu_parts_ms / 2.0)

    data["service_settings"]["intra_op_threads"] = "1"  # the slower sweep -> a lower limit
    assert benchmark.compose(data, args)["limit"]["rps"] < expected


def test_with_several_bulk_streams_the_bulk_target_compares_with_as_many_concurrent_calls() -> None:
    args = argparse.Namespace(compose_at=64, max_batch=8)
    data = report()
    single = benchmark.compose(data, args)
    data["ort"]["cpu_streams"] = {
        "streams": 2,
        "intra_op_threads": 1,
        "images_per_s": {"8": 2500.0, "16": 3000.0},
    }
    composed = benchmark.compose(data, args)
    # the limit's model part: every core on it as the service runs it, two concurrent calls at max_batch
    assert composed["limit"]["model_s"] == pytest.approx(1 / 2500)
    assert composed["limit"]["model_s"] < single["limit"]["model_s"]
    assert composed["model_reference"] == "2 concurrent calls, intra_op_threads=1"
    assert composed["bulk_ort_peak_images_per_s"] == 3000.0
    assert composed["targets"]["bulk_share_of_peak_ort"]["measured"] == pytest.approx(1500 / 3000)
    assert composed["bulk_ort_reference"] == "2 concurrent calls, intra_op_threads=1"
    # one stream: the one-call sweep's peak, as before
    assert single["bulk_ort_peak_images_per_s"] == single["ort_peak_images_per_s"]
    markdown = render_markdown({**data, "composed": composed})
    assert "2 concurrent calls, intra_op_threads=1, peak 3,000 images/s" in markdown


def test_markdown_carries_the_figures() -> None:
    data = report()
    data["composed"] = benchmark.compose(data, argparse.Namespace(compose_at=64, max_batch=8))
    text = render_markdown(data)
    assert "shared machine" in text and "no GPU available" in text
    assert "other processes on this machine used 0.25 of its 2 cores" in text
    assert "| 64 | 600.0 |" in text  # the level row
    assert "2,000.0 req/s at 64 clients" in text  # the framework ceiling
    assert "| 64 | gan-serve (dynamic batching) | 600.0 | 100.0 | 200.0 | 2.000 | 1.50× | 0 |" in text
    assert "| 64 | naive FastAPI (sync route, batch-1 ORT) | 400.0 |" in text
    assert "| 64 | Ray Serve | not installed |" in text
    assert "| single-image req/s at 8 clients ≥ 1.0 × the naive peer's | 0.80× | **no** |" in text
    # 2.0 CPU ms per answer less 1.0 ms of model per image: service.capacity's choice for 2 cores
    assert "`GAN_REQUEST_CPU_MS=1.00` runs 1 worker(s) × 1 thread(s) on these 2 cores" in text
    assert "placeholder" not in text


def test_compose_at_an_unmeasured_level_says_so() -> None:
    composed = benchmark.compose(report(), argparse.Namespace(compose_at=32, max_batch=8))
    assert "not among the measured levels" in composed["note"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "1,x"], "--concurrency"),
        (["--concurrency", "0"], "at least one level"),
        (["--level-seconds", "0"], "--level-seconds"),
        (["--model-dir", "/nonexistent"], "manifest.json not found"),
        (["--env", "novalue"], "NAME=VALUE"),
        (["--env", "foo=1"], "no service setting ['foo']"),
        (["--env", "intra_op_threads=abc"], "intra_op_threads"),
    ],
)
def test_bench_flag_errors_name_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_time_parsing() -> None:
    assert duration_seconds("90") == 90 and duration_seconds("90s") == 90
    assert duration_seconds("2m") == 120 and duration_seconds("1h30m") == 5400
    for bad in ("", "0s", "ten", "5 minutes"):
        with pytest.raises(ValueError, match="--run-time"):
            duration_seconds(bad)


def _sweeps_report(device: str, gpu_available: bool) -> dict:
    row = {"1": {"ms_per_batch": 1.0, "images_per_s": 1000.0, "cpu_ms_per_batch": 1.0, "calls": 1}}
    gpu = {"available": True, "fp32": {"1": {**row["1"], "ms_per_batch": 0.1}}} if gpu_available else {}
    return {
        "service_settings": {"device": device, "intra_op_threads": 0},
        "ort": {"cpu": {"0": row}, "gpu": gpu or {"available": False}},
    }


def test_a_cuda_service_is_measured_against_the_gpu_sweep():
    from loadtest.benchmark import reference_sweep

    sweep, label = reference_sweep(_sweeps_report("cuda", gpu_available=True))
    assert label == "CUDA provider, fp32" and sweep["1"]["ms_per_batch"] == 0.1
    _, label = reference_sweep(_sweeps_report("auto", gpu_available=True))
    assert label == "CUDA provider, fp32"
    sweep, label = reference_sweep(_sweeps_report("cpu", gpu_available=True))
    assert label == "CPU, intra_op_threads=0" and sweep["1"]["ms_per_batch"] == 1.0
    _, label = reference_sweep(_sweeps_report("cuda", gpu_available=False))
    assert label.startswith("CPU")


def test_the_naive_peer_answers_the_services_bytes_and_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same model, same seed rule, same PNG: the peers differ in serving, not in the work per answer."""
    from fastapi.testclient import TestClient

    from loadtest import naive_server
    from service.config import Settings
    from service.encoding import png_bytes
    from service.model_repo import load_model_dir
    from service.runtime import GraphKind, Runtime

    model_dir = Settings().model_dir
    monkeypatch.setenv(naive_server.ENV.model_dir, str(model_dir))
    spec = load_model_dir(model_dir)
    with TestClient(naive_server.create_app()) as client:
        answer = client.post("/generate", params={"label": 3, "seed": 11})
        assert client.post("/generate", params={"label": spec.num_classes}).status_code == 422
    assert answer.status_code == 200 and answer.headers["X-Seed"] == "11"
    z = latents.request_latents(11, 1, spec.latent_dim)
    image = Runtime(spec, Settings(model_dir=model_dir)).run(GraphKind.MAIN, z, np.array([3], dtype=np.int64))
    assert answer.content == png_bytes(image[0])


def test_framework_peers_say_whether_they_are_installed() -> None:
    peers = {p["name"]: p for p in benchmark.framework_peers()}
    assert list(peers) == ["Ray Serve", "LitServe", "BentoML"]
    installed = {
        "LitServe": importlib.util.find_spec("litserve") is not None,
        "Ray Serve": importlib.util.find_spec("ray") is not None,
        "BentoML": server.bentoml_python() is not None,  # its own virtual environment
    }
    for name, present in installed.items():  # each driven when installed
        if present:
            assert peers[name] == {"name": name, "status": "measured", "levels": []}
        else:
            assert peers[name] == {"name": name, "status": "not installed"}
    assert set(benchmark.DRIVEN_PEERS) == set(peers)


def test_markdown_has_a_row_per_level_for_a_measured_framework_peer() -> None:
    data = report()
    litserve = [{**level(64, 500.0, 50.0, {}, 0.0), "server_cpu_ms_per_request": 3.0}]
    data["peers"]["frameworks"] = [
        {"name": "Ray Serve", "status": "not installed"},
        {"name": "LitServe", "status": "measured", "levels": litserve},
        {"name": "BentoML", "status": "not installed"},
    ]
    data["composed"] = benchmark.compose(data, argparse.Namespace(compose_at=64, max_batch=8))
    text = render_markdown(data)
    assert "| 64 | LitServe (its own batching) | 500.0 | 25.0 | 50.0 | 3.000 | 1.25× | 0 |" in text
    assert "| 64 | LitServe | measured |" not in text
    assert "| 64 | Ray Serve | not installed |" in text and "| 64 | BentoML | not installed |" in text
    assert "`loadtest.litserve_peer`" in text and "`loadtest.ray_peer`" not in text
    assert "| 8 | LitServe" not in text  # no level 8 measured for it: no row

    ray = [{**level(64, 400.0, 60.0, {}, 0.0), "server_cpu_ms_per_request": 4.0}]
    data["peers"]["frameworks"][0] = {"name": "Ray Serve", "status": "measured", "levels": ray}
    text = render_markdown(data)
    assert "| 64 | Ray Serve (its own batching) | 400.0 |" in text and "`loadtest.ray_peer`" in text
    assert "| 64 | Ray Serve | " not in text


def test_concurrent_calls_time_the_service_model_as_its_bulk_streams_run_it(monkeypatch) -> None:
    from pathlib import Path

    from service.config import Settings

    model_dir = Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan"
    args = argparse.Namespace(
        model_dir=model_dir, service_threads=1, max_batch=8, ort_seconds=0.05, effective=None
    )
    args.effective = Settings(_env_file=None, model_dir=model_dir, bulk_inference_streams=2)
    monkeypatch.setattr(benchmark, "CONCURRENT_SECONDS", 0.05)
    measured = benchmark.concurrent_calls(args, [1, 8, 16, 32, 64])
    assert measured["streams"] == 2 and measured["intra_op_threads"] == 1
    assert set(measured["images_per_s"]) == {"8", "16", "32"}  # max_batch up to 4 times it
    assert all(rate > 0 for rate in measured["images_per_s"].values())
    args.effective = Settings(_env_file=None, model_dir=model_dir, bulk_inference_streams=1)
    assert benchmark.concurrent_calls(args, [8]) is None


def test_bulk_pulls_are_interleaved_with_their_reference(served: server.Server) -> None:
    from loadtest import levels

    info = levels.model_info_of(served.url)
    timed: list[int] = []

    def measure() -> float:
        timed.append(len(timed))
        return 1000.0 + len(timed)

    result = levels.bulk_delivery(served, info, 256, 2, 0, levels.BulkReference("2 calls", measure))
    bulk = result["v1_bulk_npz"]
    assert len(bulk["pulls"]) == 2 and bulk["errors"] == 0
    assert bulk["reference"] == {
        "label": "2 calls",
        "images_per_s": [1001.0, 1002.0, 1003.0],
    }  # before, between, after
    assert "reference" not in result["generate_npy_1024"]


def test_the_bulk_target_uses_the_reference_timed_between_the_pulls() -> None:
    args = argparse.Namespace(compose_at=64, max_batch=8)
    data = report()
    data["ort"]["cpu_streams"] = {"streams": 2, "intra_op_threads": 1, "images_per_s": {"8": 9000.0}}
    data["bulk"]["v1_bulk_npz"]["reference"] = {
        "label": "2 concurrent call(s)",
        "images_per_s": [2000.0, 1000.0, 3000.0],
    }
    composed = benchmark.compose(data, args)
    assert composed["bulk_ort_peak_images_per_s"] == 2000.0  # the median, not the start-of-run 9,000
    assert composed["targets"]["bulk_share_of_peak_ort"]["measured"] == pytest.approx(1500 / 2000)
    assert composed["bulk_ort_reference"] == "2 concurrent call(s), timed between the pulls: median of 3"
    assert composed["bulk_pull_ratios"] is None  # no pulls recorded: the mean over the median reference


def test_the_bulk_target_is_the_median_pull_over_the_reference_either_side_of_it() -> None:
    """Each pull is set against the machine's speed at its own moment: a pull during a slow spell is not
    charged with the machine's slowness, nor is one during a fast spell credited with it."""
    args = argparse.Namespace(compose_at=64, max_batch=8)
    data = report()
    data["bulk"]["v1_bulk_npz"]["pulls"] = [{"images_per_s": rate} for rate in (950.0, 1900.0, 1400.0)]
    data["bulk"]["v1_bulk_npz"]["reference"] = {
        "label": "2 concurrent call(s)",
        "images_per_s": [1000.0, 1000.0, 2000.0, 2000.0],
    }
    composed = benchmark.compose(data, args)
    assert composed["bulk_pull_ratios"] == pytest.approx([0.95, 1900 / 1500, 0.70])
    assert composed["targets"]["bulk_share_of_peak_ort"] == {"target": 0.9, "measured": 0.95, "met": True}
    markdown = render_markdown({**data, "composed": composed})
    assert "after it: 0.95, 1.27, 0.70; the median, 95.0 %, is the target's figure" in markdown


def test_the_bulk_reference_times_the_model_as_the_bulk_streams_run_it(monkeypatch) -> None:
    from pathlib import Path

    from service.config import Settings

    model_dir = Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan"
    effective = Settings(_env_file=None, model_dir=model_dir, device="cpu", bulk_inference_streams=2)
    args = argparse.Namespace(
        model_dir=model_dir, service_threads=1, max_batch=8, ort_max_batch=1024, effective=effective
    )
    monkeypatch.setattr(benchmark, "BETWEEN_PULLS_SECONDS", 0.02)
    sweep = {"streams": 2, "intra_op_threads": 1, "images_per_s": {"8": 900.0, "16": 1200.0, "32": 1100.0}}
    assert benchmark.bulk_reference(args, sweep).measure() > 0  # the real model, timed
    timed: list[int] = []
    monkeypatch.setattr(
        benchmark.components.Generator,
        "concurrent",
        lambda self, size, streams, seconds: timed.append(size) or 1.0,
    )
    reference = benchmark.bulk_reference(args, sweep)  # at the sweep's peak size only
    assert reference.label == "2 concurrent call(s) of 16 images, intra_op_threads=1"
    assert reference.measure() == 1.0 and timed == [16]
    assert benchmark.bulk_reference(args, None).label.startswith("2 concurrent call(s) of 8 images")


def test_raw_ort_runs_every_call_the_size_asked_for():
    """The bulk reference and the sweeps time raw calls: not the service's split into calls of max_batch."""
    from pathlib import Path

    from loadtest.components import Generator
    from service.runtime import GraphKind

    generator = Generator(Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan", "cpu", threads=1)
    graph, session = generator.runtime._graphs[GraphKind.MAIN]
    rows: list[int] = []

    class Counting:
        def run(self, outputs, feed):
            rows.append(len(next(iter(feed.values()))))
            return session.run(outputs, feed)

    generator.runtime._graphs[GraphKind.MAIN] = (graph, Counting())
    assert generator.run(256).shape[0] == 256 and rows == [256]

"""``gan-bench``: one run on one machine, every figure side by side.

1. Raw ONNX Runtime throughput of the generator at batch sizes 1..1024 (and on GPU, when there is one).
2. The composed limit of single-image requests, each part measured alone in this run and taken on every
   core, as the service runs it: a trivial FastAPI route's req/s under the same load (its ceiling), the
   model's time per image at batch ``max_batch`` (64) with as many concurrent calls as the service's
   inference streams (one call per core at one thread each on the CPU), one PNG encoding's time over the
   cores (issue #16's definition; latent sampling and the batch sizes really formed are reported beside).
   Until 2026-12-03 the model and PNG parts were one call's and one encode's time, on one core: with two
   workers the service came to exceed that "limit" (117 %), so it was no ceiling.
3. The service under single-image load at concurrency 1..128, with dynamic batching and with max_batch=1,
   interleaved level by level with the naive server (``loadtest.naive_server``: a sync FastAPI route, one
   batch-1 ORT call per request); then, where installed (the ``peers`` extra), each framework peer on its
   own, started for its levels and stopped after (an idle Ray cluster keeps about a third of a core busy,
   which would weigh on whoever is measured beside it): LitServe (``loadtest.litserve_peer``: LitServe's own
   batching) and Ray Serve (``loadtest.ray_peer``: ``@serve.batch`` in a local one-CPU Ray cluster); rows
   say "not installed" otherwise. BentoML (``loadtest.bentoml_peer``: adaptive batching behind a route of
   its own) runs from a virtual environment of its own, named by ``GAN_BENCH_BENTOML_PYTHON``: no release
   installs against constraints.txt's pins (checked 2026-12-01 for 1.0.25, 1.1.11, 1.2.0, 1.2.20, 1.3.0,
   1.3.22, 1.4.0, 1.4.30, 1.4.40). 1.3.22 and 1.4.x need opentelemetry-instrumentation-aiohttp-client, whose
   newest release (0.66b1) needs opentelemetry-api==1.45.1 where 1.45.2 is pinned; 1.1 to 1.3.0 and 1.2.20
   pin opentelemetry-api==1.20.0; 1.0.x needs starlette<0.29 (1.10.0 pinned). Its rows say "not installed"
   without that variable.
4. Bulk delivery (``/v1/bulk`` .npz stream and ``/generate?format=npy``) as a share of raw ORT images/s.

The load generator runs in this process on the same cores; its CPU is reported for every level.

    gan-bench                                  # a few minutes; results in ./gan-reports/bench/
    gan-bench --level-seconds 5 --concurrency 1,8,64
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from train.extras import BENCH, exit_for_missing_extra

try:
    import onnxruntime as ort
    from pydantic import ValidationError

    from contracts.buckets import powers_of_two
    from loadtest import components, levels, server, stats, traffic
    from loadtest.bench_report import render_markdown
    from loadtest.reports import REPORTS_DIR, Help, make_out_dir, port, where
    from service.config import Settings
    from service.runtime import available_cores, inference_streams
except ModuleNotFoundError as exc:  # a service-only install: one line naming the extras to install
    exit_for_missing_extra("gan-bench", exc, BENCH)

DEFAULT_CONCURRENCY = "1,2,4,8,16,32,64,128"
COMPOSE_AT = 64  # the concurrency the targets speak of
LOW_CONCURRENCY = 8  # the second level the naive-peer target speaks of
# issue #16's goals, as ratios from one run on one machine
TARGET_SHARE_OF_LIMIT = 0.8
TARGET_P99_MS = 100.0
TARGET_BULK_SHARE = 0.9
TARGET_VS_NAIVE = {COMPOSE_AT: 1.5, LOW_CONCURRENCY: 1.0}
# raw ORT with concurrent calls (the bulk reference with several bulk streams): seconds per batch size, and
# the batch sizes timed, max_batch up to this many times it
CONCURRENT_SECONDS = 1.0
BETWEEN_PULLS_SECONDS = 1.5  # each time the bulk reference is timed between pulls
CONCURRENT_MAX_FACTOR = 4
# serving frameworks with their own batching, measured when installed (none is a dependency): name -> whether
# it is (BentoML's own virtual environment: server.bentoml_python)
FRAMEWORK_PEERS = {
    "Ray Serve": lambda: importlib.util.find_spec("ray") is not None,
    "LitServe": lambda: importlib.util.find_spec("litserve") is not None,
    "BentoML": lambda: server.bentoml_python() is not None,
}
# those gan-bench drives: name -> the server.* context manager that starts it (same arguments as naive)
DRIVEN_PEERS = {
    "LitServe": server.litserve_peer,
    "Ray Serve": server.ray_peer,
    "BentoML": server.bentoml_peer,
}
# the servers gan-bench starts: the service with batching on and off, the trivial app, the naive peer, then
# the driven peers in DRIVEN_PEERS' order
SERVERS = 4 + len(DRIVEN_PEERS)
MEASURED = "measured"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Settings()
    p = argparse.ArgumentParser(prog="gan-bench", description=__doc__.split("\n\n")[0], formatter_class=Help)
    p.add_argument(
        "--model-dir", type=Path, default=defaults.model_dir, help="model directory (GAN_MODEL_DIR)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPORTS_DIR / "bench",
        help="where bench.json and bench.md go (a relative path is under the current directory)",
    )
    p.add_argument(
        "--port",
        type=port,
        default=None,
        help=f"first of {SERVERS} consecutive ports for the servers it starts: the service with batching "
        f"on, with it off, the trivial app, the naive peer, then one per driven peer "
        f"({', '.join(DRIVEN_PEERS)}), installed or not (default: free ports)",
    )
    p.add_argument("--concurrency", default=DEFAULT_CONCURRENCY, help="comma-separated client counts")
    p.add_argument("--compose-at", type=int, default=COMPOSE_AT, help="concurrency of the composed limit")
    p.add_argument("--level-seconds", type=float, default=3.0, help="measuring window per level")
    p.add_argument("--warmup-seconds", type=float, default=1.0, help="load before each window")
    p.add_argument("--ort-max-batch", type=int, default=1024, help="raw ORT sweep up to this batch size")
    p.add_argument("--ort-seconds", type=float, default=0.3, help="least time per batch size of the sweep")
    p.add_argument(
        "--ort-threads",
        default="0,2",
        help="intra-op thread counts of the raw sweep (0: the service's derived default, docs/operations.md)",
    )
    p.add_argument("--max-batch", type=int, default=defaults.max_batch, help="max_batch with batching on")
    p.add_argument(
        "--bulk-n",
        type=int,
        default=32768,
        help="images per /v1/bulk pull (a few seconds each: shorter pulls measure the machine's jitter)",
    )
    p.add_argument(
        "--bulk-repeats",
        type=int,
        default=5,
        help="measured pulls of each bulk kind (the bulk target is the median of the /v1/bulk pulls' ratios)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra service setting for both runs, e.g. --env intra_op_threads=1 (GAN_ prefix optional)",
    )
    p.add_argument("--log-dir", type=Path, default=None, help="server logs (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and the load")
    p.add_argument("--note", default="", help="a line for the top of the report (e.g. what else ran)")
    args = p.parse_args(argv)
    try:
        args.levels = sorted({int(v) for v in args.concurrency.split(",") if v.strip()})
        args.threads = [int(v) for v in args.ort_threads.split(",") if v.strip()]
        args.extra = dict(_setting(item) for item in args.env)
    except ValueError as exc:
        p.error(f"--concurrency/--ort-threads take comma-separated integers, --env NAME=VALUE ({exc})")
    for flag, value, least in [
        ("--max-batch", args.max_batch, 1),
        ("--ort-max-batch", args.ort_max_batch, args.max_batch),
        ("--bulk-n", args.bulk_n, 1),
        ("--bulk-repeats", args.bulk_repeats, 1),
        ("--compose-at", args.compose_at, 1),
    ]:
        if value < least:
            p.error(
                f"{flag} must be at least {least}" + (" (--max-batch)" if flag == "--ort-max-batch" else "")
            )
    unknown = sorted(set(args.extra) - set(Settings.model_fields))
    if unknown:
        p.error(f"--env: no service setting {unknown} (see service/config.py)")
    if {"host", "port"} & set(args.extra):
        p.error("--env: the servers run on the loopback interface; pin their ports with --port")
    if args.port and args.port > 65535 - (SERVERS - 1):
        p.error(f"--port: {args.port} leaves no room for the {SERVERS - 1} ports after it")
    try:
        effective = Settings(**args.extra)  # checked by the service's own rules
    except ValidationError as exc:
        p.error(f"--env: {exc}")
    # the sweep must include the thread setting the service runs with (the composed limit uses it)
    args.service_threads = effective.intra_op_threads
    args.effective = effective
    if args.service_threads not in args.threads:
        args.threads.insert(0, args.service_threads)
    if not args.levels or min(args.levels) < 1:
        p.error("--concurrency: at least one level, each >= 1")
    if min(args.level_seconds, args.ort_seconds) <= 0 or args.warmup_seconds < 0:
        p.error("--level-seconds and --ort-seconds must be > 0, --warmup-seconds >= 0")
    if not (args.model_dir / "manifest.json").is_file():
        p.error(f"--model-dir: {args.model_dir}/manifest.json not found")
    make_out_dir(p, "--out", args.out)  # last: made only for a run that will start
    return args


def _setting(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise ValueError(f"--env {item!r} is not NAME=VALUE")
    return name.lower().removeprefix("gan_"), value


# --- parts measured in this process


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "load_average_at_start": os.getloadavg(),
        "available_cores": available_cores(),
    }


def model_section(model_dir: Path) -> dict[str, Any]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    placeholder = (
        "placeholder" in str(manifest.get("version", "")) or manifest.get("normalisation") == "placeholder"
    )
    keys = ("name", "version", "sha256", "latent_dim", "num_classes", "image_shape")
    return {**{k: manifest.get(k) for k in keys}, "placeholder": placeholder, "dir": str(model_dir)}


def ort_sweeps(args: argparse.Namespace) -> dict[str, Any]:
    sizes = powers_of_two(args.ort_max_batch)
    cpu = {}
    for threads in args.threads:
        generator = components.Generator(args.model_dir, "cpu", threads=threads)
        timings = generator.sweep(sizes, args.ort_seconds)
        cpu[str(threads)] = {str(size): _timing(t, size) for size, t in timings.items()}
        peak = max(row["images_per_s"] for row in cpu[str(threads)].values())
        print(f"  raw ORT cpu, intra_op_threads={threads}: peak {peak:.0f} img/s")
    return {"cpu": cpu, "cpu_streams": concurrent_calls(args, sizes), "gpu": gpu_sweeps(args, sizes)}


def bulk_path(args: argparse.Namespace) -> tuple[components.Generator, int]:
    """The served graph on the service's CPU thread setting, and how many bulk batches the service runs at
    once with it."""
    generator = components.Generator(args.model_dir, "cpu", threads=args.service_threads)
    return generator, inference_streams(args.effective, generator.runtime)


def concurrent_calls(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any] | None:
    """Raw ORT as the service's bulk path runs it on the CPU: as many concurrent calls on one session as its
    bulk inference streams, at the batch sizes from max_batch up (the reference of the bulk target when the
    service runs more than one stream). None with one stream."""
    generator, streams = bulk_path(args)
    if streams == 1:
        return None
    seconds = max(args.ort_seconds, CONCURRENT_SECONDS)
    rates = {
        str(size): generator.concurrent(size, streams, seconds)
        for size in sizes
        if args.max_batch <= size <= CONCURRENT_MAX_FACTOR * args.max_batch
    }
    print(f"  raw ORT cpu, {streams} concurrent calls: peak {max(rates.values()):.0f} img/s")
    return {"streams": streams, "intra_op_threads": generator.runtime.intra_op_threads, "images_per_s": rates}


def bulk_reference(
    args: argparse.Namespace, streams_sweep: dict[str, Any] | None
) -> levels.BulkReference | None:
    """Raw ORT as the bulk path runs it on the CPU (as many concurrent calls on one session as the service's
    bulk inference streams), for timing between the bulk pulls, at the batch size where the start-of-run
    sweep of concurrent calls peaked (``streams_sweep``; max_batch without one). One size timed for longer
    rather than the best of several short timings: the best of several noisy readings overstates the
    reference. None when the service runs on a GPU (its reference stays the GPU sweep)."""
    if args.effective.device != "cpu" and components.gpu_available():
        return None
    generator, streams = bulk_path(args)
    rates = (streams_sweep or {}).get("images_per_s")
    size = int(max(rates, key=rates.__getitem__)) if rates else args.max_batch

    def measure() -> float:
        return generator.concurrent(size, streams, BETWEEN_PULLS_SECONDS)

    threads = generator.runtime.intra_op_threads
    label = f"{streams} concurrent call(s) of {size} images, intra_op_threads={threads}"
    return levels.BulkReference(label, measure)


def on_gpu(report: dict[str, Any]) -> bool:
    """The service ran on the CUDA provider (GAN_DEVICE cuda, or auto with one available), so its model
    time is the GPU sweep's, not the CPU's."""
    gpu = report["ort"]["gpu"]
    device = report["service_settings"].get("device", "auto")
    return device != "cpu" and bool(gpu.get("available")) and "note" not in gpu.get("fp32", {"note": ""})


def reference_sweep(report: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The raw ORT figures the service is measured against: the device and thread setting it ran with."""
    if on_gpu(report):
        return report["ort"]["gpu"]["fp32"], "CUDA provider, fp32"
    threads = str(report["service_settings"].get("intra_op_threads", 0))
    return report["ort"]["cpu"][threads], f"CPU, intra_op_threads={threads}"


def streams_label(streams: dict[str, Any]) -> str:
    """How the concurrent-calls reference (``cpu_streams``) ran."""
    return f"{streams['streams']} concurrent calls, intra_op_threads={streams['intra_op_threads']}"


def model_on_every_core(
    report: dict[str, Any], max_batch: int, seconds_per_batch: dict[int, float], reference: str
) -> tuple[float, str]:
    """The model's seconds per image at ``max_batch`` with every core on it, as the service runs it: on the
    CPU, as many concurrent calls as its inference streams (``cpu_streams``, at its thread setting); else
    (one stream, a GPU) one call at a time, as the ``reference`` sweep timed it."""
    streams = report["ort"].get("cpu_streams")
    if streams and not on_gpu(report) and str(max_batch) in streams["images_per_s"]:
        return 1.0 / streams["images_per_s"][str(max_batch)], streams_label(streams)
    return seconds_per_batch[max_batch] / max_batch, reference


def time_formed_sizes(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Time, on the service's device and thread setting, every padded batch size the batcher formed that the
    sweep (up to --ort-max-batch) left out, so the composed limit never extrapolates."""
    sweep, _ = reference_sweep(report)
    formed = {
        int(float(bound))
        for level in report["service"]["batching_on"]
        for bound in level["server"]["batch_histogram"]
        if bound != "inf"
    }
    missing = sorted(size for size in formed | {args.max_batch} if str(size) not in sweep)
    if missing:
        if on_gpu(report):
            generator = components.Generator(args.model_dir, "cuda")
        else:
            generator = components.Generator(args.model_dir, "cpu", threads=args.service_threads)
        for size, timing in generator.sweep(missing, args.ort_seconds).items():
            sweep[str(size)] = {**_timing(timing, size), "timed_after_the_sweep": True}


def _timing(timing: components.Timing, size: int) -> dict[str, float]:
    return {
        "ms_per_batch": timing.seconds * 1000,
        "images_per_s": size / timing.seconds,
        "cpu_ms_per_batch": timing.cpu_seconds * 1000,
        "calls": timing.calls,
    }


def gpu_sweeps(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    if not components.gpu_available():
        return {
            "available": False,
            "note": f"no GPU available (ONNX Runtime providers: {ort.get_available_providers()})",
        }
    result: dict[str, Any] = {"available": True}
    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    for label, variant in (("fp32", None), ("fp16", "fp16")):
        if variant and variant not in manifest.get("variants", {}):
            result[label] = {"note": "the model directory has no fp16 variant (gan-export --fp16)"}
            continue
        generator = components.Generator(args.model_dir, "cuda", variant=variant)
        timings = generator.sweep(sizes, args.ort_seconds)
        result[label] = {str(size): _timing(t, size) for size, t in timings.items()}
    return result


def encoding_parts(args: argparse.Namespace) -> dict[str, Any]:
    # one ORT thread: a pool would spin after making the images and bill its CPU to the encoding
    generator = components.Generator(args.model_dir, "cpu", threads=1)
    images = generator.run(64)
    png = components.png_seconds_per_image(images, args.ort_seconds)
    latent = components.latent_seconds_per_request(generator.spec.latent_dim, args.ort_seconds)
    return {
        "png_ms_per_image": png.seconds * 1000,
        "latent_ms_per_request": latent.seconds * 1000,
        "png_cpu_ms_per_image": png.cpu_seconds * 1000,
        "latent_cpu_ms_per_request": latent.cpu_seconds * 1000,
    }


# --- composition


def compose(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    sweep, reference = reference_sweep(report)
    seconds_per_batch = {int(size): row["ms_per_batch"] / 1000 for size, row in sweep.items()}
    on = {r["concurrency"]: r for r in report["service"]["batching_on"]}
    off = {r["concurrency"]: r for r in report["service"]["batching_off"]}
    level = on.get(args.compose_at)
    if level is None:
        return {"note": f"--compose-at {args.compose_at} is not among the measured levels"}
    histogram = {float(k): v for k, v in level["server"]["batch_histogram"].items()}
    formed_s = stats.model_seconds_per_image(histogram, level["server"]["batched_images"], seconds_per_batch)
    cores = report["machine"].get("available_cores") or report["machine"]["cpu_count"]
    model_s, model_reference = model_on_every_core(report, args.max_batch, seconds_per_batch, reference)
    limit = stats.composed_limit(
        report["framework"]["trivial_route"]["rps"],
        model_s,
        report["encoding"]["png_ms_per_image"] / 1000 / cores,
    )
    share = stats.ratio(level["rps"], limit.rps)
    cpu = cpu_view(report, level, histogram, sweep)
    peak_ort = max(row["images_per_s"] for row in sweep.values())
    at_max_batch = sweep.get(str(args.max_batch), {}).get("images_per_s")
    bulk = report["bulk"]["v1_bulk_npz"]["images_per_s"]
    bulk_peak, bulk_reference = bulk_reference_peak(report, peak_ort, reference)
    pull_ratios = bulk_pull_ratios(report)
    bulk_share = statistics.median(pull_ratios) if pull_ratios else stats.ratio(bulk, bulk_peak)
    targets = {
        **vs_naive_targets(report),
        "single_share_of_limit": _target(share, TARGET_SHARE_OF_LIMIT),
        "single_p99_ms": _target(level["p99_ms"], TARGET_P99_MS, below=True),
        "bulk_share_of_peak_ort": _target(bulk_share, TARGET_BULK_SHARE),
    }
    return {
        "concurrency": args.compose_at,
        "limit": limit.as_dict(),
        "model_s_at_formed_batches": formed_s,
        "latent_ms_per_request": report["encoding"]["latent_ms_per_request"],
        "service_rps": level["rps"],
        "service_p99_ms": level["p99_ms"],
        "share_of_limit": share,
        "cpu": cpu,
        "batching_ratio": stats.ratio(level["rps"], off.get(args.compose_at, {}).get("rps")),
        "targets": targets,
        "ort_reference": reference,
        "model_reference": model_reference,
        "cores": cores,
        "ort_peak_images_per_s": peak_ort,
        "ort_images_per_s_at_max_batch": at_max_batch,
        "bulk_share_of_ort_at_max_batch": stats.ratio(bulk, at_max_batch),
        "bulk_ort_reference": bulk_reference,
        "bulk_ort_peak_images_per_s": bulk_peak,
        "bulk_pull_ratios": pull_ratios,
    }


def bulk_pull_ratios(report: dict[str, Any]) -> list[float] | None:
    """Each ``/v1/bulk`` pull over the mean of the reference timed just before and just after it (on the CPU,
    when the reference was timed between the pulls): the target reads their median, each pull set against
    the machine's speed at its own moment rather than against the run's middle reading."""
    measured = report["bulk"]["v1_bulk_npz"]
    between = measured.get("reference")
    if not between or on_gpu(report):
        return None
    rates = between["images_per_s"]
    pulls = [pull["images_per_s"] for pull in measured.get("pulls", [])]
    if not pulls or len(rates) != len(pulls) + 1:
        return None
    return [
        pull / ((before + after) / 2) for pull, before, after in zip(pulls, rates, rates[1:], strict=False)
    ]


def bulk_reference_peak(report: dict[str, Any], peak_ort: float, reference: str) -> tuple[float, str]:
    """What the bulk target compares with: raw ORT doing what the bulk path does. Timed between the pulls
    when it was (the median), else, with several bulk streams on the CPU, the peak of as many concurrent calls
    at the start of the run, else the sweep's peak."""
    between = report["bulk"]["v1_bulk_npz"].get("reference")
    if between and not on_gpu(report):
        label = f"{between['label']}, timed between the pulls: median of {len(between['images_per_s'])}"
        return statistics.median(between["images_per_s"]), label
    streams = report["ort"].get("cpu_streams")
    if streams and not on_gpu(report):
        return max(streams["images_per_s"].values()), streams_label(streams)
    return peak_ort, reference


def _target(measured: float | None, target: float, below: bool = False) -> dict[str, Any]:
    met = measured is not None and (measured < target if below else measured >= target)
    return {"target": target, "measured": measured, "met": met}


def vs_naive_targets(report: dict[str, Any]) -> dict[str, Any]:
    """The service's req/s over the naive peer's at the levels issue #16 names (those measured)."""
    on = {r["concurrency"]: r["rps"] for r in report["service"]["batching_on"]}
    naive = {r["concurrency"]: r["rps"] for r in report.get("peers", {}).get("naive", [])}
    return {
        f"vs_naive_at_{c}": _target(stats.ratio(on[c], naive[c]), target)
        for c, target in TARGET_VS_NAIVE.items()
        if c in on and c in naive
    }


def framework_peers() -> list[dict[str, Any]]:
    """Ray Serve, LitServe, BentoML: whether each is installed, and for those that are, an empty ``levels``
    list the run fills level by level."""
    return [
        {"name": name, "status": MEASURED, "levels": []}
        if installed()
        else {"name": name, "status": "not installed"}
        for name, installed in FRAMEWORK_PEERS.items()
    ]


def cpu_view(
    report: dict[str, Any], level: dict[str, Any], histogram: dict[float, float], sweep: dict[str, Any]
) -> dict[str, Any]:
    """The same composition in CPU time, which other jobs on a shared machine do not move: the parts' CPU
    per single-image request against the service's measured CPU per answer."""
    cpu_per_batch = {int(size): row["cpu_ms_per_batch"] / 1000 for size, row in sweep.items()}
    max_batch = int(report["service_settings"]["max_batch"])
    parts = stats.ComposedLimit(
        framework_s=report["framework"]["trivial_route"]["server_cpu_ms_per_request"] / 1000,
        model_s=cpu_per_batch[max_batch] / max_batch,
        png_s=report["encoding"]["png_cpu_ms_per_image"] / 1000,
        latent_s=0.0,
    )
    service_ms = level["server_cpu_ms_per_request"]
    return {
        "parts": parts.as_dict(),
        "service_ms_per_request": service_ms,
        "parts_share_of_service": stats.ratio(parts.seconds_per_request * 1000, service_ms),
    }


# --- the run


def server_ports(first: int | None) -> tuple[int | None, ...]:
    """``--port``'s ``SERVERS`` ports: the service with batching on, with it off, the trivial app, the naive
    peer, the driven peers in ``DRIVEN_PEERS``' order (None: free)."""
    return (None,) * SERVERS if first is None else tuple(first + i for i in range(SERVERS))


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="gan-bench-"))
    report: dict[str, Any] = {
        "command": shlex.join(["gan-bench", *argv]),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "note": args.note,
        "model": model_section(args.model_dir),
    }
    base = {"model_dir": str(args.model_dir), **args.extra}
    report["service_settings"] = {
        **base,
        "max_batch": args.max_batch,
        "intra_op_threads": args.service_threads,
    }
    plan = levels.Plan(args.level_seconds, args.warmup_seconds, args.seed)
    print("raw ONNX Runtime sweep ...")
    report["ort"] = ort_sweeps(args)
    report["encoding"] = encoding_parts(args)

    report["peers"] = {"naive": [], "frameworks": framework_peers()}
    driven = [peer for peer in report["peers"]["frameworks"] if peer["status"] == MEASURED]
    names = "".join(f", {peer['name']}" for peer in driven)
    print(f"servers: batching on (max_batch={args.max_batch}), off (max_batch=1), trivial, naive{names} ...")
    with contextlib.ExitStack() as stack:
        on_port, off_port, trivial_port, naive_port, *driven_ports = server_ports(args.port)
        on_log, off_log = log_dir / "service-on.log", log_dir / "service-off.log"
        on_srv = stack.enter_context(server.service(report["service_settings"], on_log, port=on_port))
        info = levels.model_info_of(on_srv.url)
        off_srv = stack.enter_context(server.service({**base, "max_batch": 1}, off_log, port=off_port))
        trivial_srv = stack.enter_context(
            server.trivial_app(log_dir / "trivial.log", info.image_shape, port=trivial_port)
        )
        naive_srv = stack.enter_context(server.naive(log_dir / "naive.log", args.model_dir, port=naive_port))
        peer_ports = dict(zip(DRIVEN_PEERS, driven_ports, strict=True))
        # each level runs on the service and the naive peer back to back, so both see the same neighbours
        on, off = [], []
        # the framework ceiling right after the level the limit is composed at (or the last level)
        framework_after = args.compose_at if args.compose_at in args.levels else args.levels[-1]
        for concurrency in args.levels:
            on += levels.sweep(on_srv, info, [concurrency], plan, "batching on ")
            off += levels.sweep(off_srv, info, [concurrency], plan, "batching off")
            naive = levels.single(naive_srv, traffic.single_image, info, concurrency, plan)
            report["peers"]["naive"].append(naive)
            _print_peer("naive peer", concurrency, naive)
            if concurrency == framework_after:
                report["framework"] = {
                    "trivial_route": levels.single(
                        trivial_srv, traffic.single_image, info, args.compose_at, plan
                    ),
                    "service_healthz": levels.single(on_srv, levels.healthz, info, args.compose_at, plan),
                }
        report["bulk"] = levels.bulk_delivery(
            on_srv,
            info,
            args.bulk_n,
            args.bulk_repeats,
            args.seed,
            bulk_reference(args, report["ort"]["cpu_streams"]),
        )
        report["server_rss_bytes"] = on_srv.rss_bytes()
        # the framework peers after, one at a time, each up only for its own levels: an idle Ray cluster
        # alone keeps about a third of a core busy, which would weigh on whoever is measured beside it
        for peer in driven:
            log = log_dir / f"{peer['name'].lower().replace(' ', '-')}.log"
            start = DRIVEN_PEERS[peer["name"]]
            with start(log, args.model_dir, port=peer_ports.get(peer["name"])) as peer_srv:
                for concurrency in args.levels:
                    record = levels.single(peer_srv, traffic.single_image, info, concurrency, plan)
                    peer["levels"].append(record)
                    _print_peer(peer["name"], concurrency, record)
    report["service"] = {"batching_on": on, "batching_off": off}
    time_formed_sizes(report, args)
    report["composed"] = compose(report, args)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["logs"] = str(log_dir)
    return report


def _print_peer(name: str, concurrency: int, level: dict[str, Any]) -> None:
    p50, p99 = level["p50_ms"] or 0, level["p99_ms"] or 0
    print(
        f"  {name:<12} c={concurrency:<4} {level['rps']:8.1f} req/s  p50 {p50:7.1f} ms  "
        f"p99 {p99:7.1f} ms  errors {level['errors']}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        report = run(args, argv)
    except server.ServerError as exc:
        print(f"gan-bench: a server did not start: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (args.out / "bench.md").write_text(markdown)
    print()
    print(markdown)
    print(f"gan-bench: wrote bench.json and bench.md to {where(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Images per second of model directories' main graphs straight through ONNX Runtime: what an autoregressive
model's pixel-by-pixel sampling costs against a GAN's one forward pass (issue #18).

    python -m loadtest.sampling_speed models/mnist-cdcgan PIXELCNN_DIR --out reports/bench/sampling-speed.md

Each graph runs on the CPU provider with ``--threads`` intra-op threads (the service's choice on a 2-core
machine is 1), the service's latents of seeds 0.. and labels cycling through the classes; per batch size the
best of ``--repeats`` timed calls after one warm-up call counts (the least disturbed by other jobs).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contracts.latents import latents_for_seeds
from contracts.model_dir import read_manifest, verified_graph

DEFAULT_BATCHES = (1, 16)
DEFAULT_REPEATS = 3
DEFAULT_THREADS = 1
DEFAULT_OUT = Path("reports/bench/sampling-speed.md")


@dataclass(frozen=True)
class Timing:
    model: str
    sampling: str
    batch: int
    seconds: float  # best call

    @property
    def images_per_second(self) -> float:
        return self.batch / self.seconds


def time_model(directory: Path, batches: tuple[int, ...], repeats: int, threads: int) -> list[Timing]:
    manifest = read_manifest(directory)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    path = verified_graph(directory, manifest.graph())
    graph = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = f"{manifest.name} {manifest.version}"
    timings = []
    for batch in batches:
        feed = {
            manifest.inputs["latent"]: latents_for_seeds(range(batch), manifest.latent_dim),
            manifest.inputs["label"]: np.arange(batch, dtype=np.int64) % manifest.num_classes,
        }
        graph.run(None, feed)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            graph.run(None, feed)
            best = min(best, time.perf_counter() - start)
        timings.append(Timing(name, manifest.sampling, batch, best))
    return timings


def markdown(timings: list[Timing], command: str, threads: int) -> str:
    lines = [
        "# Sampling speed: autoregressive vs GAN (ONNX Runtime, CPU)",
        "",
        f"Command: `{command}`",
        "",
        f"Measured {datetime.now(UTC).isoformat(timespec='minutes')} on {platform.machine()} "
        f"({os.cpu_count()} cores, shared with other jobs: read the ratios, not the absolute numbers), "
        f"onnxruntime {ort.__version__}, CPU provider, {threads} intra-op thread(s); best of the timed calls "
        "after a warm-up call. No GPU was measured here.",
        "",
        "| model | sampling | batch | seconds per call | images / s | ms per image |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {t.model} | {t.sampling} | {t.batch} | {t.seconds:.4f} | {t.images_per_second:.1f} | "
        f"{1000 * t.seconds / t.batch:.2f} |"
        for t in timings
    ]
    by_batch: dict[int, dict[str, float]] = {}
    for t in timings:
        by_batch.setdefault(t.batch, {})[t.sampling] = t.images_per_second
    ratios = [
        f"batch {batch}: the GAN makes {rates['latent'] / rates['autoregressive']:.0f}x as many images per "
        "second as the autoregressive model"
        for batch, rates in sorted(by_batch.items())
        if {"latent", "autoregressive"} <= set(rates)
    ]
    if ratios:
        lines += ["", *(f"- {ratio}" for ratio in ratios)]
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.sampling_speed", description=__doc__)
    parser.add_argument("models", nargs="+", type=Path, help="model directories")
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="intra-op threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    batches = tuple(int(part) for part in args.batches.split(",") if part.strip())
    if not batches or min(batches) < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--batches, --repeats and --threads must be positive")
    timings = [t for model in args.models for t in time_model(model, batches, args.repeats, args.threads)]
    command = " ".join(
        ["python -m loadtest.sampling_speed", *map(str, args.models), "--batches", args.batches]
    )
    command += f" --repeats {args.repeats} --threads {args.threads} --out {args.out}"
    text = markdown(timings, command, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

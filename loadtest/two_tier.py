"""``python -m loadtest.two_tier``: the local service against two tiers on the same machine: a front end
(``GAN_INFERENCE_URL``, only manifest.json on its disk) whose batches run on a second ``gan-serve`` over the
Open Inference Protocol. The same single-image ``/generate`` sweep and ``/v1/bulk`` pull as ``gan-bench``,
one setup at a time, and the cost of one inference call of a batch, local (``Runtime.run``) against remote
(``RemoteRuntime.run``); prints Markdown tables (docs/performance.md#two-tiers)."""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from contracts.model_dir import MANIFEST_FILE
from loadtest import server
from loadtest.levels import Plan, bulk_delivery, model_info_of, sweep
from service.config import Settings
from service.model_repo import load_model_dir
from service.remote_runtime import RemoteRuntime
from service.runtime import GraphKind, Runtime

HOP_BATCHES = (1, 64)
HOP_CALLS = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.two_tier", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/mnist-cdcgan"))
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated client counts")
    parser.add_argument("--level-seconds", type=float, default=3.0)
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--bulk-n", type=int, default=4096)
    parser.add_argument("--bulk-repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def measure(srv: server.Server, args: argparse.Namespace, label: str) -> dict[str, Any]:
    info = model_info_of(srv.url)
    plan = Plan(args.level_seconds, args.warmup_seconds, args.seed)
    levels = sweep(srv, info, [int(c) for c in args.concurrency.split(",")], plan, label)
    bulk = bulk_delivery(srv, info, args.bulk_n, args.bulk_repeats, args.seed)["v1_bulk_npz"]
    return {"levels": levels, "bulk_images_per_s": bulk["images_per_s"], "bulk_errors": bulk["errors"]}


def call_ms(runtime: Runtime | RemoteRuntime, batch: int) -> float:
    """Median milliseconds of one inference call of ``batch`` latents."""
    latents = np.zeros((batch, runtime.spec.latent_dim), dtype=np.float32)
    labels = np.zeros(batch, dtype=np.int64)
    runtime.run(GraphKind.MAIN, latents, labels)
    times = []
    for _ in range(HOP_CALLS):
        start = time.perf_counter()
        runtime.run(GraphKind.MAIN, latents, labels)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def hop_table(model_dir: Path, backend_url: str) -> str:
    settings = Settings(_env_file=None, model_dir=model_dir, inference_url=backend_url)
    local = Runtime(load_model_dir(model_dir), settings)
    remote = RemoteRuntime(load_model_dir(model_dir, local=False), settings, probe=False)
    rows = ["| batch | local call ms | remote call ms | added by the hop |", "|---|---|---|---|"]
    try:
        for batch in HOP_BATCHES:
            here, there = call_ms(local, batch), call_ms(remote, batch)
            rows.append(f"| {batch} | {here:.2f} | {there:.2f} | {there - here:+.2f} ms |")
    finally:
        remote.close()
    return "\n".join(rows)


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| setup | clients | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for name, result in results.items():
        for r in result["levels"]:
            rows.append(
                f"| {name} | {r['concurrency']} | {r['rps']:,.0f} | {r['p50_ms'] or 0:.1f} | "
                f"{r['p99_ms'] or 0:.1f} | {r['errors']} |"
            )
        rows.append(f"| {name} | bulk `.npz`, 1 client | {result['bulk_images_per_s']:,.0f} images/s | | | "
                    f"{result['bulk_errors']} |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="two-tier-") as tmp:
        logs, front_dir = Path(tmp), Path(tmp) / "front-model"
        front_dir.mkdir()
        shutil.copy(args.model_dir / MANIFEST_FILE, front_dir)  # the front end's whole model directory
        model = {"model_dir": args.model_dir.resolve()}
        with server.service(model, logs / "local.log") as local:
            results["local"] = measure(local, args, "local")
        with server.service(model, logs / "backend.log") as backend:
            hops = hop_table(args.model_dir, backend.url)
            front_settings = {"model_dir": front_dir, "inference_url": backend.url}
            with server.service(front_settings, logs / "front.log") as front:
                results["front end → gan-serve"] = measure(front, args, "two tiers")
    print(table(results))
    print()
    print(hops)
    return 0


if __name__ == "__main__":
    sys.exit(main())

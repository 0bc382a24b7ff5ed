"""``gan-soak``: a bounded soak at a steady share of the measured peak. Reports the server's resident memory
over time (before/after and per interval), error counts, and the server's ``/metrics`` counters against what
the client saw (requests per endpoint and status, images delivered).

    gan-soak --minutes 10                        # starts gan-serve, measures the peak, soaks at 70 % of it
                                                 # report in ./gan-reports/soak.md
    gan-soak --minutes 2 --report reports/soak.md
    gan-soak --host http://127.0.0.1:8000 --rate 200 --minutes 30   # external server: no RSS figures
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import sys
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from train.extras import SOAK, exit_for_missing_extra

try:
    import httpx

    from loadtest import server, stats, traffic
    from loadtest.checks import ModelInfo, model_info
    from loadtest.loadgen import LevelResult, run_level
    from loadtest.reports import PORT_HELP, REPORTS_DIR, Help, make_out_dir, port, where
except ModuleNotFoundError as exc:  # a service-only install: one line naming the extra to install
    exit_for_missing_extra("gan-soak", exc, SOAK)

SOAK_NPY_N = (16, 128)  # small .npy batches: large ones would dominate the image rate of the mix


def small_npy_batch(rng: random.Random, info: ModelInfo) -> traffic.Call:
    return traffic.npy_batch(rng, info, rng.randint(*SOAK_NPY_N))


# what a busy interactive deployment sees: mostly single images, some grids and the odd walk or arithmetic
MIX = traffic.weighted(
    [
        (traffic.single_image, 90),
        (traffic.grid, 6),
        (traffic.json_batch, 1),
        (traffic.interpolate, 1),
        (traffic.arithmetic, 1),
        (small_npy_batch, 1),
    ]
)
MIB = 1 << 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gan-soak", description=__doc__.split("\n\n")[0], formatter_class=Help)
    p.add_argument("--host", default=None, help="base URL of a running service (default: start gan-serve)")
    p.add_argument("--port", type=port, default=None, help=PORT_HELP)
    p.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    p.add_argument("--rate", type=float, default=None, help="requests/s (default: --fraction of the peak)")
    p.add_argument("--fraction", type=float, default=0.7, help="share of the measured peak")
    p.add_argument("--peak-seconds", type=float, default=10.0, help="closed-loop run that measures the peak")
    p.add_argument("--concurrency", type=int, default=64, help="clients (peak run, and the soak's cap)")
    p.add_argument("--interval-seconds", type=float, default=15.0, help="one RSS sample and stats row each")
    p.add_argument(
        "--report",
        type=Path,
        default=REPORTS_DIR / "soak.md",
        help="markdown; JSON lies next to it (a relative path is under the current directory)",
    )
    p.add_argument("--note", default="", help="a line to put at the top of the report")
    p.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    args = p.parse_args(argv)
    if args.host and args.port:
        p.error("--port is the port of the server gan-soak starts; with --host, the URL names it")
    if args.minutes <= 0 or args.interval_seconds <= 0 or args.peak_seconds <= 0:
        p.error("--minutes, --interval-seconds and --peak-seconds must be > 0")
    if not 0 < args.fraction <= 1 or (args.rate is not None and args.rate <= 0) or args.concurrency < 1:
        p.error("--fraction must lie in (0, 1], --rate > 0, --concurrency >= 1")
    make_out_dir(p, "--report", args.report.parent)
    return args


def scrape(url: str) -> stats.Samples:
    return stats.parse_metrics(httpx.get(f"{url}/metrics", timeout=30).text)


def requests_seen_by_server(before: stats.Samples, after: stats.Samples) -> dict[tuple[str, int], float]:
    return {
        (labels["endpoint"], int(labels["status"])): value
        for labels, value in (
            (dict(k), v) for k, v in stats.sample_delta(before, after, "gan_http_requests_total").items()
        )
        if value and labels["endpoint"] not in ("/metrics", "/readyz", "/healthz")
    }


def compare(client: dict[tuple[str, int], int], server_seen: dict[tuple[str, int], float]) -> list[dict]:
    keys = sorted(set(client) | set(server_seen))
    return [
        {
            "endpoint": endpoint,
            "status": status,
            "client": client.get((endpoint, status), 0),
            "server": int(server_seen.get((endpoint, status), 0)),
        }
        for endpoint, status in keys
    ]


def interval_row(index: int, result: LevelResult, rss: int | None, target_rate: float) -> dict[str, Any]:
    summary = stats.summarize(result.latencies_s, result.seconds)
    return {
        "interval": index,
        "end_s": (index + 1) * result.seconds,
        "target_rps": target_rate,
        "rps": summary.rps,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "errors": result.error_count,
        "rss_mib": rss / MIB if rss else None,
        "server_cores": result.cpu.get("server_cores"),
        "other_processes_cores": result.cpu.get("other_processes_cores"),
    }


def soak(args: argparse.Namespace, srv: server.Server) -> dict[str, Any]:
    info = model_info(httpx.get(f"{srv.url}/v1/models", timeout=30).json())
    report: dict[str, Any] = {"info": info.__dict__, "load_average_at_start": os.getloadavg()}
    rate = args.rate
    if rate is None:
        print(f"gan-soak: measuring the peak ({args.concurrency} clients, {args.peak_seconds:g} s) ...")
        peak = run_level(
            srv.url, MIX, args.concurrency, args.peak_seconds, warmup_s=2, info=info, seed=args.seed
        )
        report["peak"] = {"rps": peak.ok / peak.seconds, "errors": peak.error_count}
        rate = args.fraction * report["peak"]["rps"]
    report["rate"] = rate
    intervals = max(1, round(args.minutes * 60 / args.interval_seconds))
    if intervals * args.interval_seconds > args.minutes * 60 * 1.5:
        print(
            f"gan-soak: --minutes {args.minutes:g} is shorter than one --interval-seconds "
            f"({args.interval_seconds:g}): running one interval",
            file=sys.stderr,
        )
    print(f"gan-soak: {rate:.1f} req/s for {intervals} x {args.interval_seconds:g} s ...")

    before, rss_before = scrape(srv.url), srv.rss_bytes()
    client: dict[tuple[str, int], int] = {}
    rows, images, errors, error_samples = [], 0, 0, {}
    for index in range(intervals):
        result = run_level(
            srv.url,
            MIX,
            args.concurrency,
            args.interval_seconds,
            warmup_s=0,
            rate=rate,
            server_pid=srv.pid,
            info=info,
            seed=args.seed + 1 + index,
        )
        for key, count in result.all_by_endpoint.items():
            client[key] = client.get(key, 0) + count
        images, errors = images + result.all_images, errors + result.all_errors
        error_samples.update(dict(result.errors.most_common(3)))
        rows.append(interval_row(index, result, srv.rss_bytes(), rate))
        r = rows[-1]
        print(
            f"  {r['end_s']:6.0f} s  {r['rps']:7.1f} req/s  p99 {r['p99_ms'] or 0:7.1f} ms  "
            f"errors {r['errors']}  rss {r['rss_mib'] or 0:.1f} MiB"
        )
    after, rss_after = scrape(srv.url), srv.rss_bytes()
    server_images = stats.total_delta(before, after, "gan_images_generated_total")
    report.update(
        intervals=rows,
        requests=compare(client, requests_seen_by_server(before, after)),
        images={"client": images, "server": server_images},
        errors={"client": errors, "samples": error_samples},
        dropped_by_server={
            dict(k)["reason"]: v
            for k, v in stats.sample_delta(before, after, "gan_jobs_dropped_total").items()
            if v
        },
        rss_mib={
            "before": rss_before / MIB if rss_before else None,
            "after": rss_after / MIB if rss_after else None,
        },
        load_average_at_end=os.getloadavg(),
    )
    return report


def render(report: dict[str, Any]) -> str:
    def f(value: float | None, digits: int = 1) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    rss = report["rss_mib"]
    growth = rss["after"] - rss["before"] if rss["before"] and rss["after"] else None
    agree = all(r["client"] == r["server"] for r in report["requests"])
    lines = [
        "# gan-soak",
        "",
        *([f"**{report['note']}**", ""] if report.get("note") else []),
        f"- command: `{report['command']}` (started {report['started']})",
        f"- target: {report['host']}; model {report['info']['name']}",
        f"- {len(report['intervals'])} intervals, {f(report['minutes'])} min at {f(report['rate'])} req/s "
        + (
            f"({report['fraction']:.0%} of a measured peak of {f(report['peak']['rps'])} req/s with "
            f"{report['concurrency']} clients)"
            if "peak" in report
            else "(rate given)"
        ),
        "- shared machine: load average (1, 5, 15 min) "
        f"{', '.join(f(v) for v in report['load_average_at_start'])} at start, "
        f"{', '.join(f(v) for v in report['load_average_at_end'])} at end",
        "",
        "## Result",
        "",
        (
            f"- server RSS: {f(rss['before'])} MiB before, {f(rss['after'])} MiB after "
            f"({'+' if (growth or 0) >= 0 else ''}{f(growth)} MiB)"
            if rss["before"] is not None
            else "- server RSS and cores: not measured (a server given by --host: its processes are not "
            "visible from here; gan-soak without --host starts one and measures it)"
        ),
        f"- client errors: {report['errors']['client']}"
        + (f" (e.g. {next(iter(report['errors']['samples']))})" if report["errors"]["samples"] else ""),
        f"- server dropped jobs: {report['dropped_by_server'] or 'none'}",
        f"- images: client received {report['images']['client']}, server counted "
        f"{int(report['images']['server'])} (gan_images_generated_total)",
        f"- requests per endpoint and status: client and server (gan_http_requests_total) "
        f"{'agree' if agree else '**disagree**'}",
        "",
        "| endpoint | status | client | server |",
        "| --- | --- | --- | --- |",
        *[f"| {r['endpoint']} | {r['status']} | {r['client']} | {r['server']} |" for r in report["requests"]],
        "",
        "## Per interval",
        "",
        "| end s | req/s (target) | p50 ms | p99 ms | errors | RSS MiB | server cores | other procs cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[
            f"| {f(r['end_s'], 0)} | {f(r['rps'])} ({f(r['target_rps'])}) | {f(r['p50_ms'])} | "
            f"{f(r['p99_ms'])} | {r['errors']} | {f(r['rss_mib'])} | {f(r['server_cores'], 2)} | "
            f"{f(r['other_processes_cores'], 2)} |"
            for r in report["intervals"]
        ],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    target: AbstractContextManager[server.Server] = (
        server.external(args.host)
        if args.host
        else server.service({}, Path(tempfile.mkdtemp(prefix="gan-soak-")) / "service.log", port=args.port)
    )
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        with target as srv:
            report = soak(args, srv)
            report["host"] = (
                srv.url if args.host else f"{srv.url} (gan-serve started by gan-soak, shipped settings)"
            )
    except server.ServerError as exc:
        print(f"gan-soak: {exc}", file=sys.stderr)
        return 2
    report.update(
        command=shlex.join(["gan-soak", *argv]),
        started=started,
        minutes=args.minutes,
        fraction=args.fraction,
        concurrency=args.concurrency,
        note=args.note,
    )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(render(report))
    args.report.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(render(report))
    print(f"gan-soak: wrote {where(args.report)} and {args.report.with_suffix('.json').name} beside it")
    mismatch = any(r["client"] != r["server"] for r in report["requests"])
    return 1 if report["errors"]["client"] or mismatch else 0


if __name__ == "__main__":
    sys.exit(main())

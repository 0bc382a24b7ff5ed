"""``python -m loadtest.burst``: a burst of requests fired at once at a real server (one it starts, or
``--host``), each on a connection of its own; the latency of the 429 refusals and of the 200 answers, apart.

Refusals should be fast while the admitted work goes on: a request the server cannot queue is refused at its
door (``service.middleware.QueueDoor``) without waiting behind the work in front of it. Each latency is
measured two ways: from the moment the request was sent (its connection open), which is the server's answer
time, and from the start of the burst, which also holds the time to connect (the kernel's accept queue) and
this client's own turn on its event loop (on a loaded machine, this client's delays weigh in both). The
server's own time per answer (its access log's ``duration_ms``, from the app receiving the request to the
last byte), for a server it starts, is reported beside them, and so is its count per status
(``gan_http_requests_total``, before and after). Request ``i`` is ``POST /generate?label=i%10&n=N&seed=i``.

    python -m loadtest.burst --requests 5000                          # gan-serve with its shipped settings
    python -m loadtest.burst --requests 5000 --setting max_queue_images=1024 --out reports/bench/burst

Every connection is open at once: on a loaded machine this client may take longer than
``GAN_HEADER_TIMEOUT_S`` (10 s) to write a request on a connection the server accepted, which then gets 408
(counted apart; ``--setting header_timeout_s=60`` for the server it starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import server
from loadtest.http1 import Connection, HTTPFailure
from loadtest.probe import Probe
from loadtest.reports import PORT_HELP, REPORTS_DIR, Help, figure, port, where
from loadtest.stats import Samples, parse_metrics, percentiles, sample_delta

try:  # uvloop ships with uvicorn[standard]: a cheaper client leaves more of the cores to the server
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

ROUTE = "/generate"
TIMEOUT_S = 120.0
FAILED = "failed"  # the key of requests that got no answer


@dataclass
class Burst:
    requests: int
    images: int
    seconds: float = 0.0  # from the first request sent to the last answer
    from_send_s: dict[str, list[float]] = field(default_factory=dict)  # status -> latencies
    from_start_s: dict[str, list[float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)  # what went wrong, for requests with no answer
    server_counts: dict[str, float] = field(default_factory=dict)  # status -> the server's own count
    server_s: dict[str, list[float]] = field(default_factory=dict)  # status -> its access log's durations
    probe_s: dict[str, list[float]] = field(default_factory=dict)  # status -> a fresh client's latencies

    def counts(self) -> dict[str, int]:
        return {status: len(values) for status, values in sorted(self.from_send_s.items())}

    def summary(self) -> dict[str, Any]:
        def ms(values: list[float]) -> dict[str, float | None]:
            return {k: (None if v is None else v * 1000) for k, v in percentiles(values, (50, 99)).items()}

        return {
            "requests": self.requests,
            "images_per_request": self.images,
            "seconds": self.seconds,
            "counts": self.counts(),
            "from_send_ms": {status: ms(values) for status, values in sorted(self.from_send_s.items())},
            "from_start_ms": {status: ms(values) for status, values in sorted(self.from_start_s.items())},
            "server_ms": {status: ms(values) for status, values in sorted(self.server_s.items())},
            "probe_counts": {status: len(values) for status, values in sorted(self.probe_s.items())},
            "probe_ms": {status: ms(values) for status, values in sorted(self.probe_s.items())},
            "failures": dict(self.failures),
            "server_counts": self.server_counts,
        }


async def fire(
    url: str,
    requests: int,
    images: int,
    headers: dict[str, str] | None = None,
    on_start: Callable[[], None] | None = None,
) -> Burst:
    """Send ``requests`` requests at once, each on its own new connection, and wait for every answer;
    ``on_start`` is called as they are let go."""
    burst = Burst(requests, images)
    go = asyncio.Event()

    async def one(i: int) -> None:
        connection = Connection(url, headers, timeout_s=TIMEOUT_S)
        await go.wait()
        sent = time.perf_counter()
        try:
            await connection.open()  # not the request's time: the kernel's accept queue, this client's loop
            sent = time.perf_counter()
            answer = await connection.request("POST", f"{ROUTE}?label={i % 10}&n={images}&seed={i}")
            status = str(answer.status)
        except (HTTPFailure, OSError) as exc:
            status = FAILED
            burst.failures[type(exc).__name__ if isinstance(exc, OSError) else str(exc).split(":")[0]] += 1
        finally:
            await connection.close()
        done = time.perf_counter()
        burst.from_send_s.setdefault(status, []).append(done - sent)
        burst.from_start_s.setdefault(status, []).append(done - start)

    tasks = [asyncio.create_task(one(i)) for i in range(requests)]
    await asyncio.sleep(0)  # every task waits at the gate
    start = time.perf_counter()
    if on_start is not None:
        on_start()
    go.set()
    await asyncio.gather(*tasks)
    burst.seconds = time.perf_counter() - start
    return burst


async def measure(
    url: str,
    requests: int,
    images: int,
    headers: dict[str, str] | None = None,
    probe_every_s: float = 0.0,
) -> Burst:
    """``fire``, with the server's count of answers per status over the burst (from its ``/metrics``, less
    the probe's own requests) and, every ``probe_every_s`` while it lasts, a fresh client's request from a
    process of its own (``loadtest.probe``; 0: none)."""

    async def scrape() -> Samples:
        connection = Connection(url, headers, timeout_s=TIMEOUT_S)
        try:
            return parse_metrics((await connection.request("GET", "/metrics")).body.decode())
        finally:
            await connection.close()

    before = await scrape()
    probing = Probe(url, f"{ROUTE}?label=0&n={images}&seed=0", probe_every_s) if probe_every_s else None
    with probing or contextlib.nullcontext():
        burst = await fire(url, requests, images, headers, probing.begin if probing else None)
    after = await scrape()
    burst.probe_s = probing.results if probing else {}
    delta = sample_delta(before, after, "gan_http_requests_total", {"endpoint": ROUTE})
    counted = {dict(labels)["status"]: value for labels, value in sorted(delta.items())}
    probed = {status: len(values) for status, values in burst.probe_s.items()}
    burst.server_counts = {
        status: left for status, value in counted.items() if (left := value - probed.get(status, 0))
    }
    return burst


def server_durations(log_lines: Iterable[str]) -> dict[str, list[float]]:
    """Seconds per status of the route's requests, from the service's JSON access log lines."""
    found: dict[str, list[float]] = {}
    for line in log_lines:
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("endpoint") == ROUTE and "duration_ms" in entry:
                found.setdefault(str(entry["status"]), []).append(entry["duration_ms"] / 1000)
    return found


def run(coroutine: Coroutine[Any, Any, Burst]) -> Burst:
    return uvloop.run(coroutine) if uvloop is not None else asyncio.run(coroutine)


def render(summary: dict[str, Any], context: dict[str, Any]) -> str:
    f = figure
    lines = [
        "# Burst: refusals against admitted work",
        "",
        f"- command: `{context['command']}`",
        f"- target: {context['target']}; settings: {context['settings'] or 'shipped defaults'}",
        f"- {summary['requests']} requests of `POST {ROUTE}?n={summary['images_per_request']}` fired at "
        f"once, each on its own connection; all answered within {summary['seconds']:.2f} s",
        f"- the machine: {context['machine']}",
        "",
        "| status | answers | server counted | server p50 / p99 ms | p50 / p99 ms from send | "
        "p50 / p99 ms from burst start |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for status, count in summary["counts"].items():
        send, start = summary["from_send_ms"][status], summary["from_start_ms"][status]
        own = summary["server_ms"].get(status, {"p50": None, "p99": None})
        served = summary["server_counts"].get(status)
        lines.append(
            f"| {status} | {count} | {'–' if served is None else int(served)} | {f(own['p50'])} / "
            f"{f(own['p99'])} | {f(send['p50'])} / {f(send['p99'])} | {f(start['p50'])} / {f(start['p99'])} |"
        )
    if summary.get("probe_counts"):
        lines += [
            "",
            f"A fresh client during the burst (`loadtest.probe`: a process of its own, one request every "
            f"{context['probe_every_ms']:g} ms on a new connection, timed from connect to the last byte; not "
            "counted above):",
            "",
            "| status | answers | p50 / p99 ms from connect |",
            "| --- | --- | --- |",
        ]
        for status, count in summary["probe_counts"].items():
            probe = summary["probe_ms"][status]
            lines.append(f"| {status} | {count} | {f(probe['p50'])} / {f(probe['p99'])} |")
    if summary["failures"]:
        lines += [
            "",
            "Requests without an answer: " + ", ".join(f"{k} × {v}" for k, v in summary["failures"].items()),
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.burst", description=__doc__.split("\n\n")[0], formatter_class=Help
    )
    p.add_argument("--host", default=None, help="base URL of a running service (default: start gan-serve)")
    p.add_argument("--port", type=port, default=None, help=PORT_HELP)
    p.add_argument("--requests", type=int, default=5000, help="requests in the burst")
    p.add_argument("--images", type=int, default=1, help="images per request (n)")
    p.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a GAN_* setting of the server it starts, e.g. max_queue_images=1024 (repeatable)",
    )
    p.add_argument(
        "--probe-every-ms",
        type=float,
        default=20.0,
        help="a fresh client's request every this many ms during the burst, from its own process (0: none)",
    )
    p.add_argument("--machine", default="not described", help="what the machine was doing, for the report")
    p.add_argument("--out", type=Path, default=REPORTS_DIR / "burst", help="report directory")
    args = p.parse_args(argv)
    if args.requests < 1 or args.images < 1:
        p.error("--requests and --images must be >= 1")
    if args.probe_every_ms < 0:
        p.error("--probe-every-ms must be >= 0")
    if args.host and (args.port or args.setting):
        p.error("--port and --setting are for the server it starts; --host names a running one")
    try:
        args.settings = dict(item.split("=", 1) for item in args.setting)
    except ValueError:
        p.error("--setting takes KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.host:
        target = server.external(args.host)
    else:
        log = Path(tempfile.mkdtemp(prefix="gan-burst-")) / "service.log"
        target = server.service(args.settings, log, port=args.port)
    try:
        with target as srv:
            print(f"burst: {args.requests} requests at once against {srv.url}")
            probe_every_s = args.probe_every_ms / 1000
            burst = run(measure(srv.url, args.requests, args.images, probe_every_s=probe_every_s))
            if srv.log_path is not None:
                burst.server_s = server_durations(srv.log_path.read_text(errors="replace").splitlines())
    except server.ServerError as exc:
        print(f"burst: {exc}", file=sys.stderr)
        return 2
    context = {
        "command": " ".join(["python -m loadtest.burst", shlex.join(argv)]).strip(),
        "target": args.host or "gan-serve started here",
        "settings": ", ".join(f"GAN_{k.upper()}={v}" for k, v in args.settings.items()),
        "machine": args.machine,
        "probe_every_ms": args.probe_every_ms,
    }
    summary = burst.summary()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "burst.json").write_text(json.dumps({**context, **summary}, indent=2) + "\n")
    report = render(summary, context)
    (args.out / "burst.md").write_text(report)
    print(report)
    print(f"burst: reports in {where(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``gan-loadtest``: locust, headless, for a bounded time, against a service it starts itself (``gan-serve``
on a free port, ``GAN_*`` settings from the environment) or against ``--host``. Writes locust's CSV and HTML
reports plus ``summary.md``/``summary.json`` (req/s, p50/p95/p99 per endpoint, failures) into ``--out``. The
summary holds the figures of the table locust prints when it ends (the locustfile writes them as it quits,
``FINAL_STATS``); locust's CSV is rewritten only once a second, so it can miss the last requests.

    gan-loadtest --run-time 60s --users 30                  # reports in ./gan-reports/loadtest
    gan-loadtest --host http://10.0.0.5:8000 --run-time 5m --out reports/loadtest/prod
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from train.extras import LOADTEST, exit_for_missing_extra, require

try:
    from loadtest import server
    from loadtest.reports import (
        FINAL_STATS_ENV,
        PORT_HELP,
        REPORTS_DIR,
        Help,
        figure,
        port,
        where,
    )
    from loadtest.traffic import API_KEY_ENV
except ModuleNotFoundError as exc:  # a service-only install: one line naming the extra to install
    exit_for_missing_extra("gan-loadtest", exc, LOADTEST)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CSV_PREFIX = "locust"
FINAL_STATS = "locust_final.json"  # written by the locustfile when locust quits
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
EXTRA_STOP_S = 30  # locust's own --stop-timeout plus slack, beyond --run-time


def duration_seconds(text: str) -> int:
    """``"90"``, ``"90s"``, ``"2m"``, ``"1h30m"`` → seconds (at least 1)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"--run-time {text!r}: use seconds or h/m/s, e.g. 30s, 2m, 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < 1:
        raise ValueError(f"--run-time {text!r}: must be at least 1 s")
    return total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gan-loadtest", description=__doc__.split("\n\n")[0], formatter_class=Help
    )
    p.add_argument("--host", default=None, help="base URL of a running service (default: start gan-serve)")
    p.add_argument("--port", type=port, default=None, help=PORT_HELP)
    p.add_argument("--run-time", default="60s", help="how long to load, e.g. 30s, 2m")
    p.add_argument("--users", type=int, default=20, help="concurrent locust users")
    p.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second")
    p.add_argument(
        "--out",
        type=Path,
        default=REPORTS_DIR / "loadtest",
        help="report directory (a relative path is under the current directory)",
    )
    p.add_argument("--locustfile", type=Path, default=LOCUSTFILE, help="locust file")
    p.add_argument(
        "--api-key", default=None, help=f"for a --host that needs one: sent as X-API-Key (or ${API_KEY_ENV})"
    )
    args = p.parse_args(argv)
    try:
        args.seconds = duration_seconds(args.run_time)
    except ValueError as exc:
        p.error(str(exc))
    if args.users < 1 or args.spawn_rate <= 0:
        p.error("--users must be >= 1 and --spawn-rate > 0")
    if not args.locustfile.is_file():
        p.error(f"--locustfile {args.locustfile} not found")
    if args.host and args.port:
        p.error("--port is the port of the server gan-loadtest starts; with --host, the URL names it")
    return args


def locust_command(args: argparse.Namespace, host: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(args.locustfile),
        "--headless",
        "--host",
        host,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        f"{args.seconds}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(args.out / CSV_PREFIX),
        "--html",
        str(args.out / f"{CSV_PREFIX}.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def read_stats(out: Path) -> dict[str, Any]:
    """Locust's final statistics (``FINAL_STATS``) as per-endpoint rows, the aggregate and failures; from
    its ``*_stats.csv`` and ``*_failures.csv`` when a ``--locustfile`` of one's own wrote none."""
    final = out / FINAL_STATS
    if final.exists():
        return json.loads(final.read_text())
    rows, aggregate = [], None
    with (out / f"{CSV_PREFIX}_stats.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            entry = {
                "name": row["Name"],
                "method": row["Type"],
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": _number(row["Requests/s"]),
                "p50_ms": _number(row["50%"]),
                "p95_ms": _number(row["95%"]),
                "p99_ms": _number(row["99%"]),
                "max_ms": _number(row["Max Response Time"]),
            }
            if row["Name"] == "Aggregated":
                aggregate = entry
            else:
                rows.append(entry)
    failures = []
    failures_csv = out / f"{CSV_PREFIX}_failures.csv"
    if failures_csv.exists():
        with failures_csv.open(newline="") as handle:
            failures = [
                {"name": r["Name"], "error": r["Error"], "occurrences": int(r["Occurrences"])}
                for r in csv.DictReader(handle)
            ]
    return {"endpoints": rows, "aggregate": aggregate, "failures": failures}


def render_summary(summary: dict[str, Any]) -> str:
    f = figure
    lines = [
        "# gan-loadtest summary",
        "",
        f"- command: `{summary['command']}`",
        f"- target: {summary['host']} ({'started here' if summary['started_server'] else 'external'})",
        f"- {summary['users']} users for {summary['seconds']} s; percentiles are locust's (rounded to its "
        "response-time buckets)",
        "- the machine is shared with other jobs: figures are indicative, not a capacity statement",
        "",
        "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in [*summary["endpoints"], *([summary["aggregate"]] if summary["aggregate"] else [])]:
        lines.append(
            f"| {r['name']} | {r['requests']} | {r['failures']} | {f(r['rps'])} | {f(r['p50_ms'])} | "
            f"{f(r['p95_ms'])} | {f(r['p99_ms'])} | {f(r['max_ms'])} |"
        )
    lines += ["", "## Failures", ""]
    lines += [f"- {x['name']}: {x['error']} × {x['occurrences']}" for x in summary["failures"]] or ["none"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    require("gan-loadtest", LOADTEST)  # locust runs in a subprocess
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"gan-loadtest: error: --out {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    target: AbstractContextManager[server.Server]
    if args.host:
        target = server.external(args.host)
    else:
        log = Path(tempfile.mkdtemp(prefix="gan-loadtest-")) / "service.log"
        target = server.service({}, log, port=args.port)
    (args.out / FINAL_STATS).unlink(missing_ok=True)
    env = {**os.environ, FINAL_STATS_ENV: str(args.out / FINAL_STATS)}
    if args.api_key:
        env[API_KEY_ENV] = args.api_key
    try:
        with target as srv:
            print(f"gan-loadtest: {args.users} users for {args.seconds} s against {srv.url}")
            completed = subprocess.run(
                locust_command(args, srv.url), env=env, timeout=args.seconds + EXTRA_STOP_S + 60, check=False
            )
    except server.ServerError as exc:
        print(f"gan-loadtest: {exc}", file=sys.stderr)
        return 2
    if not (args.out / f"{CSV_PREFIX}_stats.csv").exists():
        print(f"gan-loadtest: locust wrote no stats (exit code {completed.returncode})", file=sys.stderr)
        return 2
    summary = {
        "command": shlex.join(["gan-loadtest", *argv]),
        "host": args.host or srv.url,
        "started_server": args.host is None,
        "users": args.users,
        "seconds": args.seconds,
        **read_stats(args.out),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(render_summary(summary))
    print(render_summary(summary))
    print(f"gan-loadtest: reports in {where(args.out)}")
    failed = sum(r["failures"] for r in summary["endpoints"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

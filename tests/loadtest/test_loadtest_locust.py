"""A short headless locust run through ``gan-loadtest`` against a real server: no failures, and every user
class of the locustfile sent its own kind of request (so each class's checks ran on real answers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest import server

# the request names only that class sends
NAMES_OF_CLASS = {
    "SingleImageUser": {"POST /generate n=1"},
    "GridUser": {"POST /generate grid", "POST /generate json"},
    "InterpolationUser": {"POST /v1/interpolate", "POST /v1/interpolate/labels"},
    "ArithmeticUser": {"POST /v1/arithmetic", "POST /v1/every-label"},
    "AugmentationUser": {"POST /generate npy", "POST /v1/bulk"},
}


def test_short_locust_run_has_no_failures_and_every_class_sends(
    served: server.Server, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    cmd = [
        sys.executable,
        "-m",
        "loadtest.run",
        "--host",
        served.url,
        "--run-time",
        "4s",
        "--users",
        "10",
        "--spawn-rate",
        "10",
        "--out",
        str(out),
    ]
    completed = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    requests = {row["name"]: row["requests"] for row in summary["endpoints"]}
    assert summary["failures"] == [] and all(row["failures"] == 0 for row in summary["endpoints"])
    silent = [cls for cls, names in NAMES_OF_CLASS.items() if not any(requests.get(n, 0) for n in names)]
    assert not silent, f"user classes that sent nothing: {silent}; requests: {requests}"
    for name in ("locust_stats.csv", "locust.html", "summary.md"):
        assert (out / name).is_file()
    assert "| POST /generate n=1 |" in (out / "summary.md").read_text()


def test_locustfile_classes_match_the_test() -> None:
    """The mapping above must name every concrete user class, or a new class would go unchecked."""
    source = (Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py").read_text()
    declared = {
        line.split("(")[0].removeprefix("class ").strip()
        for line in source.splitlines()
        if line.startswith("class ") and "(GanUser)" in line
    }
    assert declared == set(NAMES_OF_CLASS)

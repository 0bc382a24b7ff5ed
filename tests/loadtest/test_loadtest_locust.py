"""A short headless locust run through ``gan-loadtest`` against a real server: no failures, every user class
of the locustfile sent its own kind of request (so each class's checks ran on real answers), even with as few
as 10 users, and the summary holds the very figures of the table locust printed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import server
from loadtest.stats import apportion

# the request names only that class sends
NAMES_OF_CLASS = {
    "SingleImageUser": {"POST /generate n=1"},
    "GridUser": {"POST /generate grid", "POST /generate json"},
    "InterpolationUser": {"POST /v1/interpolate", "POST /v1/interpolate/labels"},
    "ArithmeticUser": {"POST /v1/arithmetic", "POST /v1/every-label"},
    "AugmentationUser": {"POST /generate npy"},
    "BulkUser": {"POST /v1/bulk"},
}
# a row of locust's final table: type, name, # reqs, # fails(%) | ...
TABLE_ROW = re.compile(r"^(\S*)\s+(.+?)\s+(\d+)\s+(\d+)\(\d+\.\d+%\)\s+\|")


def locust_table(output: str) -> dict[str, tuple[int, int]]:
    """Requests and failures per name ("Aggregated" too) in the table locust printed as it ended."""
    return {
        f"{match[1]} {match[2]}".strip(): (int(match[3]), int(match[4]))
        for line in output.splitlines()
        if (match := TABLE_ROW.match(line))
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
    # the summary's figures are those of locust's own final table, every row and the aggregate
    table = locust_table(completed.stdout + completed.stderr)
    rows = [*summary["endpoints"], summary["aggregate"]]
    assert table == {f"{r['method']} {r['name']}".strip(): (r["requests"], r["failures"]) for r in rows}
    requests = {row["name"]: row["requests"] for row in summary["endpoints"]}
    assert summary["failures"] == [] and all(row["failures"] == 0 for row in summary["endpoints"])
    # BulkUser has its user (test_every_user_class_gets_a_user_at_low_user_counts), but its 4,096-image pull
    # may outlast so short a run on a loaded machine
    silent = [
        cls
        for cls, names in NAMES_OF_CLASS.items()
        if cls != "BulkUser" and not any(requests.get(n, 0) for n in names)
    ]
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


# locust's own dispatcher, given the counts the locustfile fixes for a headless run (locust is imported in a
# process of its own: it monkey-patches the standard library)
DISPATCH = """
import json, sys
from locust.dispatch import UsersDispatcher
from locust.runners import WorkerNode
from loadtest.locustfile import USER_CLASSES, fix_counts
users = int(sys.argv[1])
fix_counts(users)
dispatcher = UsersDispatcher(worker_nodes=[WorkerNode("w")], user_classes=list(USER_CLASSES))
dispatcher.new_dispatch(target_user_count=users, spawn_rate=users)
dispatcher._wait_between_dispatch = 0
for dispatched in dispatcher:
    pass
print(json.dumps(dispatched["w"]))
"""


@pytest.mark.parametrize("users", [6, 7, 10, 15])
def test_every_user_class_gets_a_user_at_low_user_counts(users: int) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", DISPATCH, str(users)], capture_output=True, text=True, timeout=60, check=True
    )
    counts = json.loads(completed.stdout.splitlines()[-1])
    assert sum(counts.values()) == users
    assert set(counts) == set(NAMES_OF_CLASS) and min(counts.values()) >= 1, counts


def test_apportion_keeps_the_weights_at_high_counts_and_one_each_at_low_counts() -> None:
    weights = [10, 3, 2, 2, 1, 1]
    assert apportion(100, weights) == [53, 16, 11, 10, 5, 5]
    assert apportion(19, weights) == weights
    assert apportion(10, weights) == [5, 1, 1, 1, 1, 1]
    assert apportion(6, weights) == [1] * 6
    assert apportion(3, weights) == [2, 1, 0, 0, 0, 0]  # fewer users than classes: by weight
    with pytest.raises(ValueError, match="positive weights"):
        apportion(5, [1, 0])

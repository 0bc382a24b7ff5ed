"""The load-test entry points: in an install without the `loadtest` extra each says in one line what to
install; reports go under ./gan-reports by default (never the repository's reports/), the servers they
start can be pinned to a port, and --help shows the defaults."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_support import run_without

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "models" / "mnist-cdcgan"


@pytest.mark.parametrize(
    ("blocked", "module", "line"),
    [
        (("psutil",), "loadtest.run", "gan-loadtest: needs psutil, not installed here"),
        (("locust",), "loadtest.run", "gan-loadtest: needs locust, not installed here"),  # a subprocess
        (("psutil", "h11"), "loadtest.soak", "gan-soak: needs psutil, h11, not installed here"),
        (("h11",), "loadtest.benchmark", "gan-bench: needs h11, not installed here"),
    ],
    ids=["gan-loadtest-psutil", "gan-loadtest-locust", "gan-soak", "gan-bench"],
)
def test_without_the_loadtest_extra_each_entry_says_what_to_install(tmp_path: Path, blocked, module, line):
    result = run_without(blocked, module, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"{line}: pip install 'gan-service[loadtest]'"]
    assert not (tmp_path / "out").exists()


# --- where reports go, --port, --help


def test_reports_go_under_gan_reports_in_the_current_directory_by_default(tmp_path, monkeypatch):
    from loadtest import benchmark, run, soak

    monkeypatch.chdir(tmp_path)  # the output directory is made as the flags are read
    assert run.parse_args([]).out == Path("gan-reports/loadtest")
    assert soak.parse_args([]).report == Path("gan-reports/soak.md")
    assert benchmark.parse_args(["--model-dir", str(MODEL_DIR)]).out == Path("gan-reports/bench")
    assert sorted(path.name for path in (tmp_path / "gan-reports").iterdir()) == ["bench"]


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("soak", ["--report", "{file}/soak.md"], "--report {file}: File exists"),
        ("benchmark", ["--out", "{file}/out"], "--out {file}/out: Not a directory"),
        ("benchmark", ["--ort-max-batch", "8"], "--ort-max-batch must be at least 64 (--max-batch)"),
        ("benchmark", ["--max-batch", "0"], "--max-batch must be at least 1"),
        ("benchmark", ["--bulk-n", "0"], "--bulk-n must be at least 1"),
    ],
)
def test_bad_outputs_and_sizes_are_refused_before_any_work(module, argv, message, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    parse_args = importlib.import_module(f"loadtest.{module}").parse_args
    with pytest.raises(SystemExit) as exit_info:
        parse_args([arg.format(file=blocker) for arg in argv])
    assert exit_info.value.code == 2
    assert message.format(file=blocker) in capsys.readouterr().err


def test_a_server_is_not_started_on_a_port_another_one_listens_on():
    from loadtest import server

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        url = f"http://127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(server.ServerError, match="is another server there"):
            server.require_free(url)


@pytest.mark.parametrize(
    ("module", "default"),
    [("run", "gan-reports/loadtest"), ("benchmark", "gan-reports/bench"), ("soak", "gan-reports/soak.md")],
)
def test_help_shows_the_defaults_and_the_port_flag(
    module: str, default: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COLUMNS", "500")  # argparse wraps help to the terminal's width, at hyphens too
    parse_args = importlib.import_module(f"loadtest.{module}").parse_args
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"(default: {default})" in text and "--port PORT" in text
    assert "(default: None)" not in text and "(default: )" not in text


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("run", ["--host", "http://127.0.0.1:1", "--port", "9000"], "with --host, the URL names it"),
        ("soak", ["--host", "http://127.0.0.1:1", "--port", "9000"], "with --host, the URL names it"),
        ("run", ["--port", "70000"], "must be in [1, 65535]"),
        ("benchmark", ["--model-dir", str(MODEL_DIR), "--env", "port=9000"], "pin their ports with --port"),
        (
            "benchmark",
            ["--model-dir", str(MODEL_DIR), "--port", "65534"],
            "ports after it",
        ),
    ],
)
def test_port_flag_errors(module: str, argv: list[str], message: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"loadtest.{module}").parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_ports_are_consecutive_from_the_given_one():
    from loadtest.benchmark import DRIVEN_PEERS, server_ports

    count = 4 + len(DRIVEN_PEERS)  # the service on and off, the trivial app, the naive peer, the driven peers
    assert server_ports(8100) == tuple(range(8100, 8100 + count))
    assert server_ports(None) == (None,) * count


def test_gan_loadtest_serves_on_the_pinned_port_and_says_where_the_reports_are(tmp_path: Path):
    from loadtest.server import free_port

    port, out = free_port(), tmp_path / "report"
    argv = ["--port", str(port), "--run-time", "2s", "--users", "2", "--spawn-rate", "2", "--out", str(out)]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "GAN_MODEL_DIR": str(MODEL_DIR),
        "GAN_ACCESS_LOG": "false",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "loadtest.run", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["host"] == f"http://127.0.0.1:{port}"
    assert f"gan-loadtest: reports in {out}" in completed.stdout


def test_an_external_server_not_answering_is_waited_for_out_loud_and_the_reason_given(monkeypatch, capsys):
    from loadtest import server

    monkeypatch.setattr(server, "READY_TIMEOUT_S", 0.6)
    monkeypatch.setattr(server, "SAY_WAITING_AFTER_S", 0.0)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(server.ServerError, match="Connection refused"), server.external(url):
        pass
    assert f"waiting up to 0.6 s for {url}/readyz" in capsys.readouterr().err

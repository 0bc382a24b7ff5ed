"""`gan-serve`'s exit status, one rule: a refusal is one line on stderr and status 2 (bad settings or flags, a
model it cannot run), a clean shutdown on SIGTERM/SIGINT is 0, and a server that fails to start (a worker
included) is non-zero."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from service_support import MODEL_DIR, REPO_ROOT, free_port, wait_ready

QUIET = {"GAN_ACCESS_LOG": "false", "GAN_LOG_LEVEL": "warning"}


def gan_serve(*argv: str, code: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """``python -m service.cli ARGV`` (or ``python -c CODE ARGV``) to its end, settings through ``env``."""
    command = ["-c", code] if code else ["-m", "service.cli"]
    return subprocess.run(
        [sys.executable, *command, *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "GAN_MODEL_DIR": str(MODEL_DIR), **QUIET, **env},
        timeout=180,
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gan-serve: "), result.stderr
    assert "Traceback" not in result.stderr and "pydantic" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def unparsable(model_copy: Path) -> Path:
    """The copy's model.onnx cut short, its sha256 in the manifest updated: verified, but not a graph."""
    manifest_path = model_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    graph = model_copy / manifest["file"]
    graph.write_bytes(graph.read_bytes()[:1000])
    manifest["sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    return model_copy


@pytest.mark.parametrize(
    ("argv", "env", "fragments"),
    [
        ([], {"GAN_MAX_BATCH": "abc"}, ["GAN_MAX_BATCH", "an integer >= 1 and <= 4096", "'abc'"]),
        (["--device", "gpu"], {}, ["--device", "one of auto, cpu, cuda", "'gpu'"]),
        (["--max-batch", "0"], {"GAN_MAX_BATCH": "8"}, ["--max-batch", "'0'"]),  # the flag wins and is named
        ([], {"GAN_ACCESS_LOG": "maybe"}, ["GAN_ACCESS_LOG", "true or false"]),
    ],
    ids=["env-not-an-integer", "flag-not-a-choice", "flag-out-of-range", "env-not-a-bool"],
)
def test_bad_settings_are_one_line_naming_the_variable_or_flag(argv, env, fragments):
    assert_one_line_refusal(gan_serve(*argv, "--port", "0", **env), "invalid settings", *fragments)


def test_a_model_onnx_runtime_cannot_parse_is_refused_in_one_line(model_copy):
    result = gan_serve("--model-dir", str(unparsable(model_copy)), "--port", "0")
    assert_one_line_refusal(result, "refusing to start", "ONNX Runtime cannot load it")


def test_a_worker_that_fails_to_start_makes_gan_serve_fail(model_copy):
    """The CLI's own model check skipped, so the unparsable graph reaches the workers' start-up."""
    code = "import sys, service.cli as c; c.check_model = lambda s: None; sys.exit(c.main(sys.argv[1:]))"
    model = unparsable(model_copy)
    result = gan_serve("--model-dir", str(model), "--port", "0", code=code, GAN_WORKERS="2")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "failed to start" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(("sig", "drain_s"), [(signal.SIGTERM, "0.2"), (signal.SIGINT, "0")])
def test_a_clean_shutdown_exits_0(sig, drain_s):
    port = free_port()
    env = {**os.environ, "GAN_MODEL_DIR": str(MODEL_DIR), **QUIET, "GAN_DRAIN_S": drain_s}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(lambda path: httpx.get(f"http://127.0.0.1:{port}{path}"))
        process.send_signal(sig)
        assert process.wait(timeout=60) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_without_onnx_runtime_gan_serve_says_what_to_install():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'onnxruntime':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from service.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    assert_one_line_refusal(gan_serve("--port", "0", code=code), "gan-service[cpu]")

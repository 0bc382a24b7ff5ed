"""The service's dependency floors in pyproject.toml are true: a fresh environment with the LOWEST versions
they allow (uv's lowest-direct resolution) passes the service tests. (An old floor once let FastAPI 0.115 in,
where `max_body_size` was silently ignored and the 413 body limit vanished.)

Only the service's own dependencies are floored; pytest comes in at its dev floor. Left out there, and run in
the main environment instead: the tests that need other extras (the schemathesis run: dev; the unconditional
model: built with torch) and the OpenAPI snapshot, whose bytes depend on library versions (older
prometheus-client names another exposition format version; older pydantic writes one schema detail
differently), not on what this project serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("pytest>=8", "pytest-timeout>=2.3")
LEFT_OUT = (
    "tests/service/test_service_schema.py",
    "tests/service/test_service_unconditional.py",
    "tests/service/test_service_openapi.py",
)
INSTALL_TIMEOUT_S = 600
TESTS_TIMEOUT_S = 1200


def _uv() -> str:
    return shutil.which("uv") or str(Path(sys.executable).parent / "uv")


@pytest.mark.timeout(INSTALL_TIMEOUT_S + TESTS_TIMEOUT_S + 60)
def test_the_service_passes_its_tests_on_the_lowest_allowed_versions(tmp_path: Path) -> None:
    venv = tmp_path / "lowest"
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run([_uv(), "venv", "-q", "-p", sys.executable, str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [_uv(), "pip", "install", "-q", "--resolution", "lowest-direct", "-e", f"{REPO_ROOT}[cpu]", *TOOLS],
        capture_output=True,
        text=True,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    versions = subprocess.run(
        [_uv(), "pip", "freeze"], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    print("\nlowest allowed:", " ".join(line for line in versions.split() if "gan-service" not in line))
    ignored = [arg for path in LEFT_OUT for arg in ("--ignore", path)]
    tests = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/service",
            *ignored,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=TESTS_TIMEOUT_S,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-2000:]

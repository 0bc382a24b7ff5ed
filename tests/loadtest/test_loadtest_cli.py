"""The load-test entry points: in an install without the `loadtest` extra each says in one line what to
install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_without(blocked: tuple[str, ...], module: str, *argv: str) -> subprocess.CompletedProcess:
    """``module``'s ``main(argv)`` in a fresh interpreter where importing ``blocked`` fails, as in an install
    without the extra that brings them (a meta-path finder refuses them)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"from {module} import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )


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

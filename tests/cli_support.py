"""Running a command-line entry point as an install without some extra would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


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

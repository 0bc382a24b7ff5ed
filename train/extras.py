"""Which optional extra an entry point needs, said in one line when it is missing.

A service-only install (``pip install 'gan-service[cpu]'``) has no torch, and ``gan-train`` there would end in
``ModuleNotFoundError: No module named 'torch'``. Each entry point but ``gan-serve`` imports what it needs
inside ``try`` and hands a ``ModuleNotFoundError`` to ``exit_for_missing_extra``, which names every missing
module of that entry point and the extras to install, and exits with status 2. Standard library only: it runs
when the extras are not there.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from typing import NoReturn

# top-level module -> the extra of pyproject.toml that installs it, per entry point
TRAIN = {"torch": "train", "safetensors": "train", "tqdm": "train", "matplotlib": "train"}
EVAL = {**TRAIN, "onnxruntime": "cpu"}  # ONNX Runtime for model directories
# gan-export: the exporter, ONNX Runtime to verify with, and the evaluation's report (model cards): matplotlib
EXPORT = {
    "torch": "export",
    "safetensors": "export",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "cpu",
    "matplotlib": "train",
}
LOADTEST = {"locust": "loadtest", "psutil": "loadtest"}  # gan-loadtest: locust against a server it watches
SOAK = {"psutil": "loadtest", "h11": "loadtest"}  # gan-soak: its own HTTP/1.1 load generator
BENCH = {**SOAK, "onnxruntime": "cpu"}  # gan-bench: and raw ONNX Runtime


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refusing it, or a module set to None in sys.modules
        return False


def exit_for_missing_extra(prog: str, error: ModuleNotFoundError, needs: Mapping[str, str]) -> NoReturn:
    """Exit with one line on stderr when ``error`` is about a module an extra provides; re-raise it when not
    (a missing module of no extra is a bug, whose traceback helps)."""
    top = (error.name or "").partition(".")[0]
    if top not in needs:
        raise error
    _exit([module for module in needs if not installed(module)] or [top], prog, needs)


def require(prog: str, needs: Mapping[str, str]) -> None:
    """Exit with one line on stderr when a module of ``needs`` is not installed (for what an entry point runs
    rather than imports, e.g. locust in a subprocess)."""
    if missing := [module for module in needs if not installed(module)]:
        _exit(missing, prog, needs)


def _exit(missing: list[str], prog: str, needs: Mapping[str, str]) -> NoReturn:
    extras = ",".join(dict.fromkeys(needs[module] for module in missing))
    print(
        f"{prog}: needs {', '.join(missing)}, not installed here: pip install 'gan-service[{extras}]'",
        file=sys.stderr,
    )
    raise SystemExit(2)

"""The parts depend on each other one way only (docs/design.md, "Layers"):

    contracts ← train ← evaluation ← export        contracts ← service        (loadtest and tests: anything)

Checked over every import statement in each part, the ones inside functions included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTS = ("contracts", "train", "evaluation", "export", "service", "loadtest")
ALLOWED = {
    "contracts": set(),
    "train": {"contracts"},
    "evaluation": {"contracts", "train"},
    "export": {"contracts", "train", "evaluation"},
    "service": {"contracts"},
    "loadtest": set(PARTS),
}
# What the bottom layer may need beyond the standard library: no torch, no web framework.
CONTRACTS_THIRD_PARTY = {"numpy", "pydantic"}
WEB_STACK = {"fastapi", "starlette", "uvicorn", "prometheus_client"}


def imported_modules(package: str, root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """Top-level module name → the files of ``package`` that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(root)))
    return found


@pytest.mark.parametrize("part", PARTS)
def test_a_part_imports_only_the_parts_below_it(part: str) -> None:
    imports = imported_modules(part)
    wrong = {
        other: sorted(files)
        for other, files in imports.items()
        if other in PARTS and other != part and other not in ALLOWED[part]
    }
    assert not wrong, f"{part} may import only {sorted(ALLOWED[part])}; it imports {wrong}"


def test_contracts_need_neither_torch_nor_a_web_framework() -> None:
    imports = imported_modules("contracts")
    foreign = {
        name: sorted(files)
        for name, files in imports.items()
        if name not in sys.stdlib_module_names and name not in PARTS and name not in CONTRACTS_THIRD_PARTY
    }
    assert not foreign, f"contracts may use the standard library, {sorted(CONTRACTS_THIRD_PARTY)}: {foreign}"


@pytest.mark.parametrize("part", ["train", "evaluation", "export"])
def test_the_offline_parts_do_not_import_the_web_stack(part: str) -> None:
    imports = imported_modules(part)
    assert not (WEB_STACK & set(imports)), {name: imports[name] for name in WEB_STACK & set(imports)}


def test_the_checker_finds_an_import_hidden_in_a_function(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    lazy = "def f():\n    from service.latents import x\n    import torch\n"
    (tmp_path / "train" / "lazy.py").write_text(lazy)
    assert imported_modules("train", tmp_path) == {"service": {"train/lazy.py"}, "torch": {"train/lazy.py"}}

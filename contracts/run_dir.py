"""The run directory (docs/design.md), written by ``gan-train`` and read by ``gan-export`` and ``gan-eval``:
its file names and its JSON files. The weights inside need torch and are read by ``train.checkpoint``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.files import atomic_write_json

CONFIG_FILE = "config.json"  # everything needed to rebuild the generator
GENERATOR_FILE = "generator.safetensors"  # the generator to export (the EMA copy when EMA is on)
STATE_FILE = "state.safetensors"  # every tensor needed to resume
STATE_META_FILE = "state.json"  # epoch, step, optimiser hyper-parameters
LOG_FILE = "log.jsonl"
LOSSES_PLOT = "losses.png"
SAMPLES_DIR = "samples"
SNAPSHOTS_DIR = "snapshots"  # --keep-every: snapshots/epoch_NNN/, each a run directory without resume state


class RunDirError(ValueError):
    """A run directory is missing a file or holds one that does not match; the message names it."""


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / GENERATOR_FILE).is_file()


def has_state(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / STATE_FILE).is_file() and (run_dir / STATE_META_FILE).is_file()


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise RunDirError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: not readable JSON ({exc})") from exc


def write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data)


def read_config(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / CONFIG_FILE)


def write_config(run_dir: str | Path, config: dict) -> None:
    write_json(Path(run_dir) / CONFIG_FILE, config)


def snapshot_dir(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / SNAPSHOTS_DIR / f"epoch_{epoch:03d}"


def snapshot_epoch(path: Path) -> int | None:
    digits = path.name.removeprefix("epoch_")
    return int(digits) if path.name.startswith("epoch_") and digits.isdigit() else None


def snapshots(run_dir: str | Path) -> list[Path]:
    """The run's kept generators (``gan-train --keep-every``), oldest first."""
    folder = Path(run_dir) / SNAPSHOTS_DIR
    if not folder.is_dir():
        return []
    kept = [p for p in folder.iterdir() if snapshot_epoch(p) is not None and is_run_dir(p)]
    return sorted(kept, key=snapshot_epoch)

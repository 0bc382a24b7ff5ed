"""Run-directory files: ``config.json``, ``generator.safetensors`` and the resume state.

Weights are safetensors and everything else is JSON; nothing is pickled, so loading a run never executes code.
``state.safetensors`` holds every tensor needed to resume (networks, EMA, optimiser moments, RNG states) under
prefixed names; ``state.json`` holds the rest (epoch, step, optimiser hyper-parameters).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from contracts.files import atomic_path
from contracts.run_dir import (
    CONFIG_FILE,
    GENERATOR_FILE,
    LOG_FILE,
    STATE_FILE,
    STATE_META_FILE,
    RunDirError,
    read_config,
    read_json,
    snapshot_dir,
    snapshot_epoch,
    snapshots,
    write_config,
    write_json,
)
from train.models import Architecture, build_generator


def _save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
            str(tmp),
            metadata=metadata,
        )


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors and its header's metadata (``save_state``'s epoch and step; none in older files),
    in one read."""
    if not path.is_file():
        raise RunDirError(f"{path} not found")
    try:
        with safe_open(str(path), "pt") as handle:
            names = handle.keys()  # a safetensors handle is not iterable itself
            return {name: handle.get_tensor(name) for name in names}, handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise RunDirError(f"{path}: not a readable safetensors file ({exc})") from exc


def save_generator(run_dir: Path, generator: nn.Module) -> None:
    _save_tensors(Path(run_dir) / GENERATOR_FILE, generator.state_dict())


def save_snapshot(run_dir: Path, generator: nn.Module, meta: dict, epoch_record: dict) -> Path:
    """A run directory of its own holding this epoch's generator: gan-eval and gan-export take it as is
    (``log.jsonl`` holds the epoch's record: a PixelCNN's export reads its held-out bits/dim there)."""
    snapshot = snapshot_dir(run_dir, meta["epoch"])
    snapshot.mkdir(parents=True, exist_ok=True)
    save_generator(snapshot, generator)
    write_json(snapshot / STATE_META_FILE, meta)
    (snapshot / LOG_FILE).write_text(json.dumps(epoch_record) + "\n")
    write_config(snapshot, read_config(run_dir))  # last: a snapshot is whole once it has its config
    return snapshot


def drop_snapshots_after(run_dir: Path, epoch: int) -> None:
    """On a resume from ``epoch``: generators kept after it belong to the abandoned continuation."""
    for snapshot in snapshots(run_dir):
        if snapshot_epoch(snapshot) > epoch:
            shutil.rmtree(snapshot)


def load_generator(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the generator of a run from ``config.json`` + ``generator.safetensors``, in eval mode."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    try:
        generator = build_generator(config["model"], Architecture.from_config(config))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{run_dir / CONFIG_FILE}: cannot rebuild the generator ({exc})") from exc
    weights_path = run_dir / GENERATOR_FILE
    try:
        generator.load_state_dict(_load_tensors(weights_path)[0])
    except RuntimeError as exc:
        raise RunDirError(f"{weights_path} does not match {run_dir / CONFIG_FILE} ({exc})") from exc
    return generator.eval(), config


def save_state(run_dir: Path, modules: dict[str, Any], meta: dict) -> None:
    """Save ``modules`` (name → nn.Module, optimiser or tensor) and ``meta`` (JSON) for resuming."""
    tensors: dict[str, torch.Tensor] = {}
    optimisers: dict[str, Any] = {}
    for name, obj in modules.items():
        if isinstance(obj, torch.Tensor):
            tensors[name] = obj
        elif isinstance(obj, torch.optim.Optimizer):
            flat, rest = _flatten_optimiser(obj.state_dict())
            tensors.update({f"{name}.{k}": v for k, v in flat.items()})
            optimisers[name] = rest
        else:
            tensors.update({f"{name}.{k}": v for k, v in obj.state_dict().items()})
    marker = {"epoch": str(meta["epoch"]), "step": str(meta["step"])}
    _save_tensors(Path(run_dir) / STATE_FILE, tensors, metadata=marker)
    write_json(Path(run_dir) / STATE_META_FILE, {**meta, "optimisers": optimisers})


def load_state(run_dir: str | Path, modules: dict[str, Any], own_optimiser_settings: bool = False) -> dict:
    """Restore ``modules`` in place from the run's resume state; returns ``state.json``'s content.

    Tensors (e.g. RNG states) cannot be restored in place: the loaded ones are returned under
    ``meta["tensors"][name]``. ``own_optimiser_settings``: an optimiser takes the saved moments but keeps its
    own settings (learning rate, betas, eps...), as a warm start does; they are in place before the state is
    loaded, which places some of it by them.
    """
    run_dir = Path(run_dir)
    meta = read_json(run_dir / STATE_META_FILE)
    tensors, marker = _load_tensors(run_dir / STATE_FILE)
    if any(marker.get(key, str(meta.get(key))) != str(meta.get(key)) for key in ("epoch", "step")):
        raise RunDirError(
            f"{run_dir}: {STATE_FILE} (epoch {marker.get('epoch')}, step {marker.get('step')}) and "
            f"{STATE_META_FILE} (epoch {meta.get('epoch')}, step {meta.get('step')}) are of different "
            "checkpoints: that run is writing one now, or stopped between the two writes (then its state "
            "cannot be used; its generator.safetensors still can)"
        )
    loaded: dict[str, torch.Tensor] = {}
    try:
        for name, obj in modules.items():
            prefix = f"{name}."
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if isinstance(obj, torch.Tensor):
                loaded[name] = tensors[name]
            elif isinstance(obj, torch.optim.Optimizer):
                saved = _unflatten_optimiser(part, meta["optimisers"][name])
                if own_optimiser_settings:
                    saved["param_groups"] = [
                        {**{k: v for k, v in own.items() if k != "params"}, "params": group["params"]}
                        for own, group in zip(obj.param_groups, saved["param_groups"], strict=True)
                    ]
                obj.load_state_dict(saved)
            else:
                obj.load_state_dict(part)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise RunDirError(f"{run_dir / STATE_FILE} does not match this run's models ({exc})") from exc
    return {**meta, "tensors": loaded}


def _flatten_optimiser(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimiser(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}

"""Resuming continues the same run exactly; the seed fixes the run; a run directory is never mixed up."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from contracts.run_dir import RunDirError
from train.loop import TrainConfig, train

pytestmark = pytest.mark.usefixtures("single_thread")


def step_losses(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "step"]


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny_config: TrainConfig, tmp_path: Path):
    two = replace(tiny_config, epochs=2)
    train(two, tmp_path / "straight", progress=False)
    train(replace(two, epochs=1), tmp_path / "resumed", progress=False)
    summary = train(two, tmp_path / "resumed", progress=False)

    assert summary.resumed_from_epoch == 1 and summary.steps == 12
    straight = load_file(str(tmp_path / "straight" / "state.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "state.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert step_losses(tmp_path / "straight") == step_losses(tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["training"]["epochs"] == 2
    assert sorted(p.name for p in (tmp_path / "resumed" / "samples").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
    ]


# The names state.safetensors stores its tensors under: runs written by earlier versions must keep resuming.
# The VAE's encoder and its optimiser are stored as "critic" and "opt_d", like a GAN's discriminator.
STATE_PREFIXES = {"generator", "critic", "opt_g", "opt_d", "ema", "rng_torch", "rng_shuffle"}


@pytest.mark.parametrize("model", ["cdcgan", "cvae"])
def test_state_file_layout_is_stable_and_resumes(tiny_config: TrainConfig, tmp_path: Path, model: str):
    one = replace(tiny_config, model=model)
    train(one, tmp_path / "resumed", progress=False)
    state = load_file(str(tmp_path / "resumed" / "state.safetensors"))
    assert {key.split(".")[0] for key in state} == STATE_PREFIXES
    optimisers = json.loads((tmp_path / "resumed" / "state.json").read_text())["optimisers"]
    assert set(optimisers) == {"opt_g", "opt_d"}

    train(replace(one, epochs=2), tmp_path / "resumed", progress=False)
    train(replace(one, epochs=2), tmp_path / "straight", progress=False)
    assert step_losses(tmp_path / "resumed") == step_losses(tmp_path / "straight")


def test_log_lines_after_the_last_checkpoint_are_dropped_on_resume(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path, progress=False)
    with (tmp_path / "log.jsonl").open("a") as f:  # as if killed mid-way through epoch 2
        f.write(json.dumps({"event": "step", "epoch": 2, "step": 7, "d_loss": 99.0}) + "\n")
    train(replace(tiny_config, epochs=2), tmp_path, progress=False)
    records = step_losses(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(r["d_loss"] != 99.0 for r in records)


def test_same_seed_same_losses_other_seed_other_losses(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path / "a", progress=False)
    train(tiny_config, tmp_path / "b", progress=False)
    train(replace(tiny_config, seed=1), tmp_path / "c", progress=False)
    assert step_losses(tmp_path / "a") == step_losses(tmp_path / "b")
    assert step_losses(tmp_path / "a")[0] != step_losses(tmp_path / "c")[0]


def test_resume_required_but_nothing_there(tiny_config: TrainConfig, tmp_path: Path):
    with pytest.raises(RunDirError, match="nothing to resume"):
        train(tiny_config, tmp_path / "empty", resume=True, progress=False)


def test_resume_with_other_settings_is_refused(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path, progress=False)
    with pytest.raises(RunDirError, match=r"differs in: .*lr_g"):
        train(replace(tiny_config, epochs=2, lr_g=1e-3), tmp_path, progress=False)
    with pytest.raises(RunDirError) as refused:  # each field once, with the recorded and the asked-for value
        train(replace(tiny_config, epochs=2, loss="lsgan", width=8), tmp_path, progress=False)
    assert "differs in: loss 'hinge' → 'lsgan', width 4 → 8)" in str(refused.value)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(tiny_config, tmp_path, resume=False, progress=False)
    with pytest.raises(RunDirError, match="has trained 1 epochs already"):
        train(tiny_config, tmp_path, progress=False)


def test_determinism_setting_is_restored(tiny_config: TrainConfig, tmp_path: Path):
    before = torch.are_deterministic_algorithms_enabled()
    train(tiny_config, tmp_path, progress=False)
    assert torch.are_deterministic_algorithms_enabled() == before


def test_corrupt_state_is_reported_with_its_file(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path, progress=False)
    (tmp_path / "state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RunDirError, match=r"state\.safetensors"):
        train(replace(tiny_config, epochs=2), tmp_path, progress=False)

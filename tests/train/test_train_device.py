"""Where a run trains (--device) and how often it writes checkpoints (--checkpoint-every)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from contracts.run_dir import has_state, read_config, snapshots
from train.loop import TrainConfig, resolve_device, train

pytestmark = pytest.mark.usefixtures("single_thread")


def epoch_records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "epoch"]


def test_checkpoints_every_n_epochs_and_always_the_last(tiny_config: TrainConfig, tmp_path: Path):
    run = tmp_path / "run"
    train(replace(tiny_config, epochs=5), run, progress=False, checkpoint_every=2)

    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "epoch_002.png",
        "epoch_004.png",
        "epoch_005.png",
    ]
    assert len(epoch_records(run)) == 5
    assert json.loads((run / "config.json").read_text())["device"].startswith("cpu")


def test_sparse_checkpoints_change_no_result(tiny_config: TrainConfig, tmp_path: Path):
    three = replace(tiny_config, epochs=3)
    train(three, tmp_path / "every", progress=False)
    train(three, tmp_path / "sparse", progress=False, checkpoint_every=3)

    every = load_file(str(tmp_path / "every" / "generator.safetensors"))
    sparse = load_file(str(tmp_path / "sparse" / "generator.safetensors"))
    assert all(torch.equal(every[k], sparse[k]) for k in every)


def test_resume_goes_on_from_the_last_checkpoint(tiny_config: TrainConfig, tmp_path: Path):
    run = tmp_path / "run"
    train(replace(tiny_config, epochs=3), run, progress=False, checkpoint_every=2)
    summary = train(replace(tiny_config, epochs=4), run, progress=False)

    assert summary.resumed_from_epoch == 3
    assert [r["epoch"] for r in epoch_records(run)] == [1, 2, 3, 4]


def test_checkpoint_every_below_one_is_refused(tiny_config: TrainConfig, tmp_path: Path):
    with pytest.raises(ValueError, match="checkpoint_every must be at least 1, got 0"):
        train(tiny_config, tmp_path / "run", progress=False, checkpoint_every=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["tpu", "cuda:x", ""])
def test_unknown_device_names_the_choices(name: str):
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_follows_the_cpu_run(tiny_config: TrainConfig, tmp_path: Path):
    """Same seed, same random stream: the GPU's losses track the CPU's up to float rounding."""
    two = replace(tiny_config, epochs=2)
    train(two, tmp_path / "cpu", progress=False, device="cpu")
    train(two, tmp_path / "cuda", progress=False, device="cuda")

    cpu, cuda = epoch_records(tmp_path / "cpu"), epoch_records(tmp_path / "cuda")
    for a, b in zip(cpu, cuda, strict=True):
        assert a["d_loss"] == pytest.approx(b["d_loss"], rel=1e-2, abs=1e-3)


def test_kept_generators_are_run_directories_of_their_epoch(tiny_config: TrainConfig, tmp_path: Path):
    run = tmp_path / "run"
    train(replace(tiny_config, epochs=5), run, progress=False, checkpoint_every=2, keep_every=2)

    kept = snapshots(run)
    assert [p.name for p in kept] == ["epoch_002", "epoch_004", "epoch_005"]  # and always the last
    for path, epoch in zip(kept, (2, 4, 5), strict=True):
        assert json.loads((path / "state.json").read_text())["epoch"] == epoch
        assert not has_state(path)  # a choice to evaluate or export, not a run to resume
        assert read_config(path) == read_config(run)
        assert json.loads((path / "log.jsonl").read_text())["epoch"] == epoch  # the epoch's record
    last = load_file(str(kept[-1] / "generator.safetensors"))
    final = load_file(str(run / "generator.safetensors"))
    assert all(torch.equal(last[k], final[k]) for k in final)
    # epoch 2's generator is what a run of 2 epochs ends with (the CPU run is deterministic)
    train(replace(tiny_config, epochs=2), tmp_path / "two", progress=False)
    two = load_file(str(tmp_path / "two" / "generator.safetensors"))
    second = load_file(str(kept[0] / "generator.safetensors"))
    assert all(torch.equal(second[k], two[k]) for k in two)
    assert any(not torch.equal(second[k], final[k]) for k in final)


def test_a_resume_drops_generators_kept_after_its_checkpoint(tiny_config: TrainConfig, tmp_path: Path):
    run = tmp_path / "run"
    train(replace(tiny_config, epochs=3), run, progress=False, keep_every=1)
    shutil.copytree(run / "snapshots" / "epoch_003", run / "snapshots" / "epoch_009")  # an abandoned future
    train(replace(tiny_config, epochs=4), run, progress=False, keep_every=1)
    assert [p.name for p in snapshots(run)] == ["epoch_001", "epoch_002", "epoch_003", "epoch_004"]


def test_kept_generators_are_listed_in_epoch_order_and_only_by_their_names(tmp_path: Path):
    for name in ("epoch_1000", "epoch_200", "epoch_x", "other"):
        (tmp_path / "snapshots" / name).mkdir(parents=True)
        (tmp_path / "snapshots" / name / "config.json").write_text("{}")
        (tmp_path / "snapshots" / name / "generator.safetensors").write_bytes(b"")
    (tmp_path / "snapshots" / "epoch_300").mkdir()  # no files: not a run directory
    assert [p.name for p in snapshots(tmp_path)] == ["epoch_200", "epoch_1000"]


def test_no_generators_are_kept_by_default(tiny_config: TrainConfig, tmp_path: Path):
    train(replace(tiny_config, epochs=2), tmp_path / "run", progress=False)
    assert snapshots(tmp_path / "run") == []


def test_keep_every_below_zero_is_refused(tiny_config: TrainConfig, tmp_path: Path):
    with pytest.raises(ValueError, match="keep_every must be 0 \\(keep none\\) or more, got -1"):
        train(tiny_config, tmp_path / "run", progress=False, keep_every=-1)
    assert not (tmp_path / "run").exists()

"""Data-parallel training (``train.distributed``): two CPU processes over gloo, as torchrun would run them.

The ranks are forked from the test process (torch already imported: a fresh interpreter costs ~10 s on the
shared machine) with the environment torchrun gives its workers; ``gan-train --nproc`` itself is checked up
to the hand-over to torchrun.
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing
import os
import socket
import traceback
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import train.loop
from contracts.run_dir import RunDirError
from train import cli
from train.distributed import World, derived_seed, unwrap
from train.loop import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")
WORLD = 2
RANK_TIMEOUT_S = 300  # a hung collective fails the test instead of the session
RUN_FILES = {
    "config.json",
    "generator.safetensors",
    "state.safetensors",
    "state.json",
    "log.jsonl",
    "losses.png",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _forbid_writes() -> None:
    """Every writer of the run directory the loop calls, made to fail: only rank 0 may write."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a rank other than 0 wrote to the run directory")

    train.loop.save_grid = refuse
    train.loop.plot_losses = refuse
    train.loop.JsonlLog.write = refuse  # type: ignore[method-assign]
    train.loop.JsonlLog.truncate_after = refuse  # type: ignore[method-assign]
    train.loop.checkpoint.save_state = refuse
    train.loop.checkpoint.save_generator = refuse
    train.loop.run_dir.write_config = refuse


def _keep_objective(kept: list) -> None:
    """Make the loop's objectives (and so its networks) visible after ``train`` returns."""
    for name in ("GANObjective", "VAEObjective"):
        base = getattr(train.loop, name)
        setattr(train.loop, name, type(name, (base,), {"__init__": _recorded(base.__init__, kept)}))


def _recorded(init, kept: list):
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        kept.append(self)

    return __init__


def _rank(rank: int, port: int, config: TrainConfig, out: Path, weights: Path | None) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        if rank:
            _forbid_writes()
        objectives: list = []
        _keep_objective(objectives)
        train.loop.train(config, out, progress=False)
        if weights is not None:  # this rank's parameters, to check that the ranks agree
            modules = objectives[0].state_modules()
            tensors = {
                f"{name}.{key}": value
                for name in ("generator", "critic")
                for key, value in unwrap(modules[name]).named_parameters()
            }
            save_file(
                {key: value.detach().contiguous() for key, value in tensors.items()},
                weights / f"rank{rank}.safetensors",
            )
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)  # past pytest's own exit handlers, which belong to the parent


def train_on_two(config: TrainConfig, out: Path, weights: Path | None = None) -> None:
    """``train(config, out)`` on two ranks, as ``torchrun --nproc-per-node 2`` would run it; each rank's final
    parameters in ``weights/rank{r}.safetensors`` when given."""
    # train() switches on deterministic algorithms, which imports torch._inductor: 25 s on the loaded machine,
    # paid once here rather than in every forked rank
    importlib.import_module("torch._inductor")
    port = free_port()
    fork = multiprocessing.get_context("fork")
    ranks = [fork.Process(target=_rank, args=(rank, port, config, out, weights)) for rank in range(WORLD)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(RANK_TIMEOUT_S)
    for process in ranks:
        if process.is_alive():
            process.kill()
    assert [process.exitcode for process in ranks] == [0] * WORLD


def records(run: Path, event: str) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_two_processes_resume_exactly_and_a_seed_names_the_run(tiny_config: TrainConfig, tmp_path: Path):
    two = replace(tiny_config, epochs=2)
    train_on_two(replace(two, epochs=1), tmp_path / "resumed")
    train_on_two(two, tmp_path / "resumed")
    train_on_two(two, tmp_path / "straight", weights=tmp_path)

    for run in ("resumed", "straight"):
        assert {p.name for p in (tmp_path / run).iterdir()} == RUN_FILES | {"samples"}
        assert sorted(p.name for p in (tmp_path / run / "samples").iterdir()) == [
            "epoch_001.png",
            "epoch_002.png",
        ]
        # the global batch of 8 over two ranks: 6 steps per epoch as in one process, each logged once
        assert [r["step"] for r in records(tmp_path / run, "step")] == list(range(1, 13))
        assert [r["epoch"] for r in records(tmp_path / run, "epoch")] == [1, 2]
        config = json.loads((tmp_path / run / "config.json").read_text())
        assert config["world_size"] == WORLD and config["command"] is None
    assert records(tmp_path / "resumed", "step") == records(tmp_path / "straight", "step")
    rank0, rank1 = (load_file(str(tmp_path / f"rank{rank}.safetensors")) for rank in range(WORLD))
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    straight = load_file(str(tmp_path / "straight" / "state.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "state.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key

    with pytest.raises(RunDirError, match="world_size 2 → 1"):
        train.loop.train(replace(two, epochs=3), tmp_path / "resumed", progress=False)


@pytest.mark.parametrize(
    "variant",
    [
        {"model": "cvae"},
        {"model": "mlp", "loss": "wgan-gp", "ema_decay": 0.0},
        {"model": "cgan", "loss": "wgan-gp", "class_weight": 0.5},  # the critic's tuple through DDP
    ],
    ids=["cvae", "wgan-gp", "class-weight"],
)
def test_other_variants_train_on_two_processes(tiny_config: TrainConfig, tmp_path: Path, variant: dict):
    train_on_two(replace(tiny_config, **variant), tmp_path / "run")
    logged = records(tmp_path / "run", "epoch")
    assert len(logged) == 1
    assert all(math.isfinite(value) for key, value in logged[0].items() if key != "event")
    assert ("d_class" in logged[0]) == ("class_weight" in variant)


def test_ranks_share_the_shuffle_and_split_the_batch_and_the_noise():
    order = torch.arange(24).view(3, 8)
    shards = [World(rank, WORLD).shard(order) for rank in range(WORLD)]
    assert torch.equal(torch.cat(shards, dim=1), order)  # disjoint, together the whole global batch
    assert World().shard(order) is order

    def draws(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        shuffle = torch.Generator()
        World(rank, WORLD).reseed(seed=3, epoch=5, shuffle=shuffle)
        return torch.randperm(10, generator=shuffle), torch.randn(4)

    (perm0, noise0), (perm1, noise1) = draws(0), draws(1)
    assert torch.equal(perm0, perm1) and not torch.equal(noise0, noise1)
    assert derived_seed(3, 5, 0) != derived_seed(3, 6, 0)


def test_the_global_batch_must_divide_over_the_processes():
    assert World(0, 4).per_rank_batch(128) == 32
    with pytest.raises(ValueError, match="batch_size 10 is the global batch"):
        World(0, 4).per_rank_batch(10)


def test_a_run_that_records_no_world_size_had_one_process(tiny_config: TrainConfig, tmp_path: Path):
    run = tmp_path / "old"
    train.loop.train(tiny_config, run, progress=False)
    config = json.loads((run / "config.json").read_text())
    assert config.pop("world_size") == 1
    (run / "config.json").write_text(json.dumps(config))  # as runs written before distributed training
    summary = train.loop.train(replace(tiny_config, epochs=2), run, progress=False)
    assert summary.resumed_from_epoch == 1 and summary.steps == 12


def test_gan_train_nproc_hands_torchrun_the_command_without_it(
    tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    launched: list[tuple[int, str, list[str]]] = []
    monkeypatch.setattr(cli, "launch", lambda n, module, argv: launched.append((n, module, argv)) or 0)
    argv = ["--data", str(tiny_npz), "--nproc", "2", "--batch-size", "8", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    assert launched == [
        (2, "train.cli", ["--data", str(tiny_npz), "--batch-size", "8", "--out", str(tmp_path / "run")])
    ]
    assert cli.without_nproc(["--nproc=4", "--epochs", "3"]) == ["--epochs", "3"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nproc", "3", "--batch-size", "8"], "batch_size 8 is the global batch"),
        (["--nproc", "0"], "--nproc must be at least 1"),
    ],
)
def test_gan_train_nproc_refuses_before_launching(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_gan_train_refuses_to_resume_at_another_world_size(
    tiny_config: TrainConfig, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    train.loop.train(tiny_config, tmp_path / "run", progress=False)
    monkeypatch.setattr(cli, "launch", lambda *args: pytest.fail("launched a resume at another world size"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--out", str(tmp_path / "run"), "--epochs", "2", "--nproc", "2"])
    assert exit_info.value.code == 2 and "resume it with --nproc 1" in capsys.readouterr().err

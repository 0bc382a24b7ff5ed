"""``gan-train`` end to end on a tiny data file, and its one-line errors for bad input."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from tests.cli_support import run_without
from train.cli import CONFIG_FLAGS, build_parser, command_for, config_from_args, main
from train.loop import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--threads",
    "1",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--latent-dim",
    "8",
    "--width",
    "4",
    "--embed-dim",
    "4",
]

pytestmark = pytest.mark.usefixtures("single_thread")


def test_cli_trains_a_run_directory(tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run"
    argv = ["--out", str(out), "--data", str(tiny_npz), "--model", "dcgan", "--loss", "lsgan", *TINY]
    assert main([*argv, "--lr", "1e-3", "--keep-every", "1", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "dcgan" and config["loss"] == "lsgan" and not config["conditional"]
    assert config["training"]["lr_g"] == config["training"]["lr_d"] == 1e-3
    assert config["data"]["source"] == str(tiny_npz)
    assert config["command"].startswith("gan-train --out")
    assert (out / "samples" / "epoch_001.png").is_file()
    assert (out / "snapshots" / "epoch_001" / "generator.safetensors").is_file()
    assert "1 epochs, 6 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--keep-every", "-1"], r"keep_every must be 0 \(keep none\) or more, got -1"),
        (["--ema-decay", "1.5"], r"ema_decay must be in \[0, 1\)"),
        (["--model", "cvae", "--loss", "hinge"], "trains with loss 'elbo'"),
        (["--loss", "hinge", "--label-smoothing", "0.1"], "bce and lsgan"),
        (["--resume"], "nothing to resume"),
        (["--held-out-fraction", "1"], r"held_out_fraction must be in \(0, 1\)"),
        (["--loss", "elbo"], r"'elbo' belongs to --model cvae .*'cdcgan' takes .*hinge"),
        (["--model", "dcgan", "--loss", "nll"], r"'nll' belongs to --model pixelcnn .*'dcgan' takes"),
    ],
)
def test_cli_bad_input_is_one_clear_line(
    tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "run"), "--data", str(tiny_npz), *TINY, *extra, "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gan-train: error:")
    assert re.search(message, err)
    assert "Traceback" not in err


def test_cli_missing_data_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture):
    missing = tmp_path / "nope.npz"
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "run"), "--data", str(missing), "--no-progress"])
    assert str(missing) in capsys.readouterr().err


def refusal(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one line ``main(argv)`` exits 2 with."""
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, *TINY, "--no-progress"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gan-train: error:"), captured.err
    return lines[0]


def test_a_run_without_its_state_is_neither_resumed_nor_overwritten(
    tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    out = tmp_path / "run"
    out.mkdir()
    files = {"config.json": b'{"training": {}}', "state.safetensors": b"x", "generator.safetensors": b"g"}
    for name, content in files.items():
        (out / name).write_bytes(content)
    line = refusal(["--out", str(out), "--data", str(tiny_npz), "--epochs", "2"], capsys)
    assert str(out) in line and "without its state.json" in line and "neither resumed nor overwritten" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # untouched


def test_an_existing_empty_directory_is_trained_into(tiny_npz: Path, tmp_path: Path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["--out", str(out), "--data", str(tiny_npz), *TINY, "--no-progress"]) == 0
    assert (out / "state.json").is_file()


@pytest.mark.parametrize("case", ["regular file", "below a regular file", "unwritable /proc"])
def test_an_out_that_cannot_be_a_directory_is_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str
):
    file = tmp_path / "a-file"
    file.write_text("mine")
    out = {"regular file": file, "below a regular file": file / "run", "unwritable /proc": Path("/proc/foo")}
    if case == "unwritable /proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    # a missing data file would be the next error: --out is checked first
    line = refusal(["--out", str(out[case]), "--data", str(tmp_path / "nope.npz")], capsys)
    assert str(out[case]) in line and "nope.npz" not in line
    assert file.read_text() == "mine"


def test_every_config_field_has_a_flag():
    assert set(CONFIG_FLAGS) == {f.name for f in fields(TrainConfig)}


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(),
        TrainConfig(model="cvae", loss="elbo", epochs=5, kl_weight=0.5),
        TrainConfig(
            model="dcgan",
            loss="wgan-gp",
            epochs=3,
            batch_size=32,
            spectral_norm=False,
            minibatch_std=True,
            conditional_bn=True,
            lr_g=1e-4,
            lr_d=4e-4,
            beta1=0.5,
            n_critic=2,
            instance_noise=0.1,
            augment="translation,cutout",
            ema_decay=0.0,
            data="data/train.npz",
            labels="data/labels.idx",
            held_out_fraction=0.25,
            split_seed=3,
            seed=7,
            sample_columns=4,
            log_every=5,
        ),
    ],
    ids=["defaults", "cvae", "everything"],
)
def test_command_for_parses_back_to_the_same_config(config: TrainConfig, tmp_path: Path):
    command = command_for(config, tmp_path / "run", device="cpu")
    assert command.startswith(f"gan-train --model {config.model} ")
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert config_from_args(args) == config
    assert args.out == str(tmp_path / "run") and args.device == "cpu"


def test_command_for_writes_only_what_differs_from_the_defaults():
    command = command_for(TrainConfig(model="cvae", epochs=5, spectral_norm=False), "runs/x")
    assert command == "gan-train --model cvae --epochs 5 --no-spectral-norm --out runs/x"


def test_without_torch_gan_train_says_which_extra_to_install(tmp_path: Path):
    result = run_without(("torch",), "train.cli", "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "gan-train: needs torch, not installed here: pip install 'gan-service[train]'"
    ]
    assert not (tmp_path / "run").exists()


def test_a_resume_keeps_the_recorded_settings(tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run"
    first = ["--out", str(out), "--data", str(tiny_npz), *TINY, "--lr", "1e-3", "--sample-columns", "2"]
    assert main([*first, "--no-progress"]) == 0
    recorded = json.loads((out / "config.json").read_text())["training"]
    capsys.readouterr()

    # only --epochs given: every other setting is the recorded one, not the default recipe's
    assert main(["--out", str(out), "--epochs", "2", "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "resuming" in printed and "config.json records" in printed
    assert "except those given on the command line: epochs=2" in printed
    assert "2 epochs, 12 steps" in printed
    training = json.loads((out / "config.json").read_text())["training"]
    assert training == {**recorded, "epochs": 2}

    # no flags at all: the recorded 2 epochs, not the default 393, so there is nothing left to train
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), "--threads", "1", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "has trained 2 epochs already; pass --epochs above 2" in err
    assert json.loads((out / "config.json").read_text())["training"] == training  # not rewritten

    # an explicit change of another setting is still refused, naming the field once with both values
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), "--epochs", "3", "--batch-size", "16", "--lr", "2e-3", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "differs in: batch_size 8 → 16, lr_g 0.001 → 0.002, lr_d 0.001 → 0.002)" in err


def test_readme_pipeline_says_how_to_reach_the_commands():
    """README's pipeline commands are console scripts of the venv: not found unless it is activated."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## The pipeline") :]
    section = section[: section.index("\n## ", 1)]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    commands = {word for line in block.splitlines()[1:] for word in line.split() if word.startswith("gan-")}
    assert commands and commands <= set(scripts)
    assert "`. .venv/bin/activate`" in section and "`.venv/bin/gan-train`" in section

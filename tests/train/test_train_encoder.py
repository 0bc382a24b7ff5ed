"""The encoder's settings: validated options with help and defaults, and a refusal before any training."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

import numpy as np
import pytest

from train.encoder import EncoderConfig, add_encoder_arguments, train_encoder
from train.models import Architecture


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gan-train-encoder")
    add_encoder_arguments(p)
    return p


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "-1"],
        ["--steps", "0"],
        ["--batch-size", "0"],
        ["--width", "0"],
        ["--embed-dim", "0"],
        ["--hidden", "0"],
        ["--lr", "-1"],
        ["--lr", "0"],
        ["--lr", "nan"],
        ["--pixel-weight", "-0.5"],
        ["--seed", "-1"],
        ["--steps", "ten"],
    ],
)
def test_bad_values_are_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("gan-train-encoder: error: argument " + argv[0]) and argv[1] in error


def test_defaults_and_good_values_parse_to_the_config():
    args = parser().parse_args([])
    assert EncoderConfig(**{f.name: getattr(args, f.name) for f in fields(EncoderConfig)}) == EncoderConfig()
    args = parser().parse_args(["--steps", "5", "--lr", "2e-4", "--pixel-weight", "0"])
    assert (args.steps, args.lr, args.pixel_weight) == (5, 2e-4, 0.0)


def test_help_describes_every_option_with_its_default():
    text = " ".join(parser().format_help().split()).split("options:")[1]
    defaults = EncoderConfig()
    for field in fields(EncoderConfig):
        flag = "--" + field.name.replace("_", "-")
        option = text[text.index(flag + " ") :]
        described = option.split(" --")[0]
        assert f"({getattr(defaults, field.name)})" in described and len(described.split()) > 4, described


@pytest.mark.parametrize(
    "change", [{"steps": 0}, {"batch_size": 0}, {"width": 0}, {"lr": -1.0}, {"pixel_weight": -1.0}]
)
def test_train_encoder_refuses_a_bad_config_before_generating(change: dict):
    def generate(z: np.ndarray, label: np.ndarray) -> np.ndarray:
        raise AssertionError("no image may be generated for a bad config")

    arch = Architecture(latent_dim=4, num_classes=2, image_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=next(iter(change))):
        train_encoder(generate, arch, replace(EncoderConfig(pixel_weight=0.0), **change))

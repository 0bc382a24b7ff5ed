"""DiffAugment: shapes and pixel values survive, gradients flow, the policy string is checked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from train.augment import augment, cutout, parse_policy, translation
from train.loop import TrainConfig, train


def blobs(n: int = 16) -> torch.Tensor:
    """Background -1 with a 2×2 foreground square in the middle of an 8×8 image."""
    x = -torch.ones(n, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    return x


def test_translation_moves_whole_pixels_and_fills_with_background():
    torch.manual_seed(0)
    moved = translation(blobs())
    assert set(moved.unique().tolist()) == {-1.0, 1.0}
    assert (moved > 0).sum(dim=(1, 2, 3)).tolist() == [4] * 16  # a 1-px max shift keeps the blob inside
    assert not torch.equal(moved, blobs())


def test_cutout_erases_to_background_only():
    torch.manual_seed(0)
    erased = cutout(torch.ones(16, 1, 8, 8))
    counts = (erased < 0).sum(dim=(1, 2, 3))
    assert counts.max().item() == 16 and counts.min().item() >= 4  # a 4×4 square, possibly clipped
    assert set(erased.unique().tolist()) == {-1.0, 1.0}


def test_gradients_flow_through_the_policy():
    x = blobs().requires_grad_(True)
    augment(x, parse_policy("translation,cutout")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum().item() > 0


def test_policy_parsing():
    assert parse_policy("") == () == parse_policy("none")
    assert parse_policy(" translation , cutout") == ("translation", "cutout")
    with pytest.raises(ValueError, match=r"unknown augmentation \['flip'\]"):
        parse_policy("translation,flip")


@pytest.mark.usefixtures("single_thread")
def test_a_run_with_augmentation(tiny_config: TrainConfig, tmp_path: Path):
    summary = train(replace(tiny_config, augment="translation,cutout"), tmp_path, progress=False)
    assert summary.steps == 6
    assert (tmp_path / "generator.safetensors").is_file()

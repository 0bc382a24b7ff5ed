"""The conditional gated PixelCNN: causal masks, inverse-CDF sampling from the seed's noise, and the trainer's
run directory (NLL in bits per dimension, held-out bits per dimension, resume)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pixelcnn_support import TINY_RECIPE
from safetensors.torch import load_file

from export.pixelcnn import held_out_likelihood
from train.cli import command_for
from train.loop import HELD_OUT_BPD, TrainConfig, train
from train.models import Architecture, build_generator, get_variant
from train.pixelcnn import inverse_cdf, level_values, quantise

pytestmark = pytest.mark.usefixtures("single_thread")

SIDE = 6


def tiny_pixelcnn(levels: int = 4, layers: int = 2, conditional: bool = True) -> torch.nn.Module:
    arch = Architecture(
        latent_dim=SIDE * SIDE,
        num_classes=3,
        image_shape=(SIDE, SIDE, 1),
        width=8,
        levels=levels,
        layers=layers,
    )
    torch.manual_seed(0)
    model = build_generator("pixelcnn", arch).eval()
    with torch.no_grad():  # sharper distributions than the initialisation's, so the sampling tests bite
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return model


def test_pixel_i_depends_only_on_the_pixels_before_it_in_raster_order():
    model = tiny_pixelcnn()
    label = torch.tensor([1])
    base = torch.rand(1, 1, SIDE, SIDE) * 2 - 1
    with torch.no_grad():
        before = model.logits(base, label)[0].flatten(1)  # [levels, pixels]
        for j in range(SIDE * SIDE):
            changed = base.clone()
            changed.view(-1)[j] = -changed.view(-1)[j] - 0.5
            after = model.logits(changed, label)[0].flatten(1)
            moved = (after - before).abs().amax(dim=0) > 0
            assert not moved[: j + 1].any(), f"pixel {j} reaches the logits of pixels up to itself"
            if j + 1 < SIDE * SIDE:
                assert moved[j + 1], f"pixel {j} does not reach the next pixel"


def test_row_steps_equal_the_whole_image():
    model = tiny_pixelcnn()
    x, label = torch.rand(2, 1, SIDE, SIDE) * 2 - 1, torch.tensor([0, 2])
    with torch.no_grad():
        full = model.logits(x, label)
        for row in range(SIDE):
            links = model.row_links(x[:, :, : row + 1], label)
            torch.testing.assert_close(
                model.row_logits(x[:, :, row : row + 1], links, label), full[:, :, row]
            )


def test_inverse_cdf_takes_the_smallest_level_whose_cdf_exceeds_u():
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.5]] * 4))
    u = torch.tensor([0.0, 0.3, 0.5, 0.999999])
    assert inverse_cdf(logits, u).tolist() == [0, 1, 2, 2]
    assert quantise(torch.tensor([-1.0, -0.4, 0.2, 1.0]), 4).tolist() == [0, 1, 2, 3]


def test_sampling_is_fixed_by_the_noise_and_uses_the_label():
    model = tiny_pixelcnn()
    z = torch.randn(1, SIDE * SIDE).repeat(3, 1)
    with torch.no_grad():
        images = model(z, torch.tensor([0, 1, 0]))
        again = model(z, torch.tensor([0, 1, 0]))
        other = model(torch.randn(3, SIDE * SIDE), torch.tensor([0, 1, 0]))
    assert torch.equal(images, again) and torch.equal(images[0], images[2])
    assert not torch.equal(images[0], images[1]) and not torch.equal(images, other)
    assert set(images.unique().tolist()) <= set(level_values(4).tolist())


def test_the_variant_is_autoregressive_with_its_own_loss():
    variant = get_variant("pixelcnn")
    assert variant.autoregressive and variant.conditional and variant.fixed_loss == "nll"
    with pytest.raises(ValueError, match="autoregressive models, not 'cdcgan'"):
        TrainConfig(levels=8).resolve()
    with pytest.raises(ValueError, match="trains with loss 'nll'"):
        TrainConfig(model="pixelcnn", loss="hinge").resolve()
    with pytest.raises(ValueError, match="levels must be in"):
        TrainConfig(model="pixelcnn", levels=1).resolve()


def records(run: Path, event: str) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture
def pixelcnn_config(tiny_config: TrainConfig) -> TrainConfig:
    return replace(tiny_config, **TINY_RECIPE, sample_columns=1)


def test_training_lowers_the_nll_and_records_held_out_bits_per_dim(
    pixelcnn_config: TrainConfig, tmp_path: Path
):
    summary = train(replace(pixelcnn_config, epochs=3), tmp_path, progress=False, keep_every=1)
    steps = [r["bits_per_dim"] for r in records(tmp_path, "step")]
    assert summary.steps == 18 and steps[-1] < steps[0]
    epochs = records(tmp_path, "epoch")
    assert epochs[-1][HELD_OUT_BPD] < epochs[0][HELD_OUT_BPD] < 2.0  # log2(4 levels) = 2: better than uniform
    # a kept generator carries its epoch's held-out NLL, which gan-export puts in the manifest
    kept = held_out_likelihood(tmp_path / "snapshots" / "epoch_001")
    assert kept[HELD_OUT_BPD] == epochs[0][HELD_OUT_BPD]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["latent_dim"] == 8 * 8 and config["loss"] == "nll"
    assert config["architecture"]["levels"] == 4 and config["architecture"]["layers"] == 1
    assert (tmp_path / "samples" / "epoch_003.png").is_file() and (tmp_path / "losses.png").is_file()
    assert "--model pixelcnn" in command_for(pixelcnn_config, tmp_path) and "--layers 1" in command_for(
        pixelcnn_config, tmp_path
    )


def test_resume_continues_the_same_run(pixelcnn_config: TrainConfig, tmp_path: Path):
    two = replace(pixelcnn_config, epochs=2)
    train(two, tmp_path / "straight", progress=False)
    train(replace(two, epochs=1), tmp_path / "resumed", progress=False)
    assert train(two, tmp_path / "resumed", progress=False).resumed_from_epoch == 1
    straight = load_file(str(tmp_path / "straight" / "state.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "state.safetensors"))
    assert straight.keys() == resumed.keys() and {key.split(".")[0] for key in straight} == {
        "generator",
        "opt_g",
        "rng_torch",
        "rng_shuffle",
    }
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert records(tmp_path / "straight", "step") == records(tmp_path / "resumed", "step")

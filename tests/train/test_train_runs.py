"""A few steps of every model × loss through the real loop: finite losses, a complete run directory,
and a generator that reloads from its files alone to the outputs the run saved."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from train.artifacts import image_grid
from train.checkpoint import load_generator
from train.data import to_uint8
from train.loop import TrainConfig, sample_inputs, train
from train.losses import LOSSES
from train.models import VARIANTS

GAN_MODELS = sorted(name for name, variant in VARIANTS.items() if variant.adversarial)
CASES = [(model, loss) for model in GAN_MODELS for loss in sorted(LOSSES)] + [("cvae", None)]

pytestmark = pytest.mark.usefixtures("single_thread")


def step_records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "step"]


@pytest.mark.parametrize(("model", "loss"), CASES, ids=[f"{m}-{loss or 'elbo'}" for m, loss in CASES])
def test_few_steps_give_finite_losses_and_a_reloadable_generator(
    tiny_config: TrainConfig, tmp_path: Path, model: str, loss: str | None
):
    cfg = replace(tiny_config, model=model, loss=loss)
    summary = train(cfg, tmp_path, progress=False)

    assert summary.steps == 6
    records = step_records(tmp_path)
    assert len(records) == 6
    loss_keys = {"d_loss", "g_loss"} if loss else {"loss", "reconstruction", "kl"}
    seen = set().union(*(r.keys() for r in records))
    assert loss_keys <= seen
    assert all(math.isfinite(r[k]) for r in records for k in loss_keys if k in r)
    for name in ("config.json", "generator.safetensors", "state.safetensors", "state.json", "losses.png"):
        assert (tmp_path / name).is_file(), name

    generator, config = load_generator(tmp_path)
    assert not generator.training
    assert config["model"] == model and config["loss"] == (loss or "elbo")
    assert config["split"]["train_count"] == 48 and config["split"]["held_out_count"] == 12
    # The grid the run saved is reproduced pixel for pixel by the generator rebuilt from its files.
    z, labels = sample_inputs(
        config["num_classes"], cfg.sample_columns, cfg.latent_dim, config["conditional"]
    )
    with torch.no_grad():
        images = generator(z, labels)
    assert images.shape == (len(z), 1, 8, 8)
    assert float(images.abs().max()) <= 1.0
    regenerated = np.asarray(image_grid(to_uint8(images.numpy()), rows=config["num_classes"]))
    saved = np.asarray(Image.open(tmp_path / "samples" / "epoch_001.png"))
    np.testing.assert_array_equal(regenerated, saved)


def test_conditional_generator_uses_the_label(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path, progress=False)
    generator, _ = load_generator(tmp_path)
    z = torch.randn(1, tiny_config.latent_dim).repeat(2, 1)
    with torch.no_grad():
        a, b = generator(z, torch.tensor([0, 1]))
    assert not torch.equal(a, b)


def test_saved_generator_is_the_ema_copy(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path, progress=False)
    saved = load_file(str(tmp_path / "generator.safetensors"))
    state = load_file(str(tmp_path / "state.safetensors"))
    key = next(iter(saved))
    torch.testing.assert_close(saved[key], state[f"ema.module.{key}"], rtol=0, atol=0)
    assert not torch.equal(saved[key], state[f"generator.{key}"])


def test_without_ema_the_raw_generator_is_saved(tiny_config: TrainConfig, tmp_path: Path):
    train(replace(tiny_config, ema_decay=0.0), tmp_path, progress=False)
    saved = load_file(str(tmp_path / "generator.safetensors"))
    state = load_file(str(tmp_path / "state.safetensors"))
    assert not any(k.startswith("ema.") for k in state)
    for key, value in saved.items():
        assert torch.equal(value, state[f"generator.{key}"])


@pytest.mark.parametrize(
    "options",
    [
        {"conditional_bn": True, "minibatch_std": True},
        {"loss": "bce", "label_smoothing": 0.1, "instance_noise": 0.1},
        {"lr_g": 1e-4, "lr_d": 4e-4, "spectral_norm": False, "n_critic": 2},
        {"model": "cgan", "conditional_bn": True},
    ],
    ids=["cbn-mbstd", "bce-smoothing-noise", "ttur-no-sn-ncritic2", "cgan-cbn"],
)
def test_stabiliser_options_train_and_reload(tiny_config: TrainConfig, tmp_path: Path, options: dict):
    train(replace(tiny_config, **options), tmp_path, progress=False)
    records = step_records(tmp_path)
    assert all(math.isfinite(r["d_loss"]) for r in records)
    assert sum("g_loss" in r for r in records) == 6 // options.get("n_critic", 1)
    generator, config = load_generator(tmp_path)
    assert all(config["training"][k] == v for k, v in options.items())
    with torch.no_grad():
        assert torch.isfinite(generator(torch.randn(2, tiny_config.latent_dim), torch.tensor([0, 3]))).all()


def test_no_progress_bar_when_stderr_is_not_a_terminal(
    tiny_config: TrainConfig, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """Captured output is not a terminal: no bar redraws (\r fragments) in it, the epoch lines still."""
    train(replace(tiny_config, epochs=2), tmp_path, progress=True)
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    assert [line.split(":")[0] for line in captured.out.splitlines()] == ["epoch 1/2", "epoch 2/2"]

"""Every variant's generator keeps the shared interface, for any image shape the data brings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from contracts.run_dir import RunDirError, write_config
from train.checkpoint import load_generator, save_generator
from train.models import (
    VARIANTS,
    Architecture,
    Variant,
    build_critic,
    build_encoder,
    build_generator,
    get_variant,
)

SHAPES = [(8, 8, 1), (28, 28, 1), (12, 16, 3)]
# The latent generators; the autoregressive pixelcnn (noise per pixel, one channel): test_pixelcnn.py
LATENT_MODELS = sorted(name for name, variant in VARIANTS.items() if not variant.autoregressive)


def small(shape: tuple[int, int, int] = (8, 8, 1), **kw) -> Architecture:
    return Architecture(latent_dim=6, num_classes=3, image_shape=shape, width=4, embed_dim=3, **kw)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", LATENT_MODELS)
def test_generator_and_critic_or_encoder_shapes(name: str, shape: tuple[int, int, int]):
    arch = small(shape)
    generator = build_generator(name, arch).eval()
    z, label = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    images = generator(z, label)
    height, width, channels = shape
    assert images.shape == (5, channels, height, width) and images.dtype == torch.float32
    assert images.abs().max().item() <= 1.0
    if get_variant(name).adversarial:
        assert build_critic(name, arch)(images, label).shape == (5,)
    else:
        mu, logvar = build_encoder(name, arch)(images, label)
        assert mu.shape == logvar.shape == (5, 6)


def test_a_variant_has_a_critic_or_an_encoder_and_the_vae_its_own_loss():
    assert get_variant("cvae").fixed_loss == "elbo" and not get_variant("cvae").adversarial
    assert get_variant("cdcgan").fixed_loss is None and get_variant("cdcgan").adversarial
    with pytest.raises(ValueError, match="has an encoder, not a critic"):
        build_critic("cvae", small())
    with pytest.raises(ValueError, match="has a critic, not an encoder"):
        build_encoder("cdcgan", small())
    with pytest.raises(ValueError, match="either a critic"):
        Variant(VARIANTS["cdcgan"].generator, True)


@pytest.mark.parametrize("name", LATENT_MODELS)
def test_label_use_matches_the_variant(name: str):
    generator = build_generator(name, small()).eval()
    z = torch.randn(1, 6).repeat(3, 1)
    with torch.no_grad():
        images = generator(z, torch.tensor([0, 1, 2]))
    differs = not torch.allclose(images[0], images[1], atol=1e-6)  # rows may differ in the last bit
    assert differs == get_variant(name).conditional


@pytest.mark.parametrize("conditional_bn", [False, True], ids=["concat", "cbn"])
@pytest.mark.parametrize("name", [name for name in LATENT_MODELS if VARIANTS[name].conditional])
def test_label_weights_generalise_the_label(name: str, conditional_bn: bool):
    generator = build_generator(name, small(conditional_bn=conditional_bn)).eval()
    z, label = torch.randn(3, 6), torch.tensor([0, 1, 2])
    with torch.no_grad():
        one_hot = generator.forward_label_weights(z, torch.eye(3)[label])
        mixed = generator.forward_label_weights(z, torch.tensor([[0.5, 0.5, 0.0]] * 3))
        torch.testing.assert_close(one_hot, generator(z, label))
        assert not torch.equal(mixed[0], one_hot[0]) and not torch.equal(mixed[1], one_hot[1])


def test_dcgan_needs_sides_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_generator("cdcgan", small((10, 10, 1)))


def test_unknown_variant_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'gan9'.*cdcgan"):
        get_variant("gan9")


def test_spectral_norm_is_optional():
    with_sn = build_critic("cdcgan", small(spectral_norm=True)).state_dict()
    without = build_critic("cdcgan", small(spectral_norm=False)).state_dict()
    assert any("parametrizations" in k for k in with_sn)
    assert not any("parametrizations" in k for k in without)


def write_run(run: Path, name: str = "cdcgan") -> torch.nn.Module:
    arch = small()
    generator = build_generator(name, arch).eval()
    config = {"model": name, "latent_dim": 6, "num_classes": 3, "image_shape": [8, 8, 1]}
    write_config(run, {**config, "architecture": arch.kwargs()})
    save_generator(run, generator)
    return generator


def test_load_generator_round_trip(tmp_path: Path):
    generator = write_run(tmp_path)
    loaded, config = load_generator(tmp_path)
    z, label = torch.randn(4, 6), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, label), generator(z, label), rtol=0, atol=0)
    assert config["model"] == "cdcgan" and not loaded.training


def test_load_generator_errors_name_the_file(tmp_path: Path):
    with pytest.raises(RunDirError, match=r"config\.json not found"):
        load_generator(tmp_path)
    write_run(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architecture": {"width": 8}}))
    with pytest.raises(RunDirError, match=r"generator\.safetensors does not match"):
        load_generator(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model": "gan9"}))
    with pytest.raises(RunDirError, match=r"config\.json: cannot rebuild"):
        load_generator(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"config\.json: not readable JSON"):
        load_generator(tmp_path)


@pytest.mark.parametrize("name", ["cgan", "cdcgan"])
def test_minibatch_std_sees_the_spread_of_the_batch(name: str):
    critic = build_critic(name, small(minibatch_std=True, spectral_norm=False)).eval()
    label = torch.zeros(8, dtype=torch.long)
    varied = torch.rand(8, 1, 8, 8) * 2 - 1
    collapsed = varied[:1].repeat(8, 1, 1, 1)
    with torch.no_grad():
        # The same first image scores differently when the rest of its batch changes.
        assert not torch.allclose(critic(varied, label)[0], critic(collapsed, label)[0])
        assert critic(varied[:3], label[:3]).shape == (3,)  # batches not divisible by the group still work


def test_conditional_bn_gives_each_label_its_own_scale_and_shift():
    generator = build_generator("cdcgan", small(conditional_bn=True))
    gains = [p for name, p in generator.named_parameters() if name.endswith(".gain")]
    assert gains and all(p.shape[0] == 3 for p in gains)
    plain = build_generator("cdcgan", small(conditional_bn=False))
    assert not any(name.endswith(".gain") for name, _ in plain.named_parameters())

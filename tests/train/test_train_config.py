"""``TrainConfig.resolve``: every setting checked once, and the pieces the loop builds from them."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from train.loop import TrainConfig
from train.losses import Hinge, WassersteinGP
from train.models import VARIANTS, Architecture
from train.objectives import VAESettings


def test_the_default_recipe_resolves_to_hinge():
    training = TrainConfig().resolve()
    assert training.variant == VARIANTS["cdcgan"]
    assert training.loss_name == "hinge" and isinstance(training.objective, Hinge)
    assert training.augmentations == ()


def test_an_adversarial_loss_is_built_with_its_settings():
    training = TrainConfig(model="dcgan", loss="wgan-gp", n_critic=3, augment="translation").resolve()
    assert isinstance(training.objective, WassersteinGP) and training.objective.n_critic == 3
    assert training.augmentations == ("translation",)


@pytest.mark.parametrize("loss", [None, "elbo"])
def test_the_vae_trains_with_its_own_loss(loss: str | None):
    training = TrainConfig(model="cvae", loss=loss, kl_weight=0.5).resolve()
    assert training.loss_name == "elbo" and training.objective == VAESettings(kl_weight=0.5)
    assert training.recorded() == {**asdict(training.config), "loss": "elbo"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TrainConfig(model="cvae", loss="hinge"), "trains with loss 'elbo', not 'hinge'"),
        (TrainConfig(model="gan9"), "unknown model 'gan9'"),
        (TrainConfig(loss="hinge", label_smoothing=0.1), "bce and lsgan"),
        (TrainConfig(width=0), "width must be at least 1"),
        (TrainConfig(augment="rotate"), "unknown augmentation"),
    ],
)
def test_bad_settings_are_refused_by_name(config: TrainConfig, message: str):
    with pytest.raises(ValueError, match=message):
        config.resolve()


def test_the_architecture_takes_the_knobs_from_the_config_and_the_dimensions_from_the_data():
    config = TrainConfig(latent_dim=16, width=8, embed_dim=4, spectral_norm=False, minibatch_std=True)
    arch = config.resolve().architecture(num_classes=3, image_shape=(12, 16, 3))
    assert arch == Architecture(16, 3, (12, 16, 3), 8, 4, False, True, False)

"""The losses' values at points where the answer is known, and their hooks (clipping, gradient penalty)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from train.losses import (
    LOSSES,
    Hinge,
    LeastSquares,
    NonSaturatingBCE,
    Wasserstein,
    WassersteinGP,
    build_loss,
    elbo,
)

ZEROS = torch.zeros(4)


def test_hinge_is_zero_beyond_the_margins_and_two_at_zero():
    loss = Hinge()
    assert loss.critic(torch.full((4,), 1.5), torch.full((4,), -1.5)).item() == 0.0
    assert loss.critic(ZEROS, ZEROS).item() == pytest.approx(2.0)
    assert loss.generator(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_bce_at_zero_logits_and_one_sided_smoothing():
    assert NonSaturatingBCE().critic(ZEROS, ZEROS).item() == pytest.approx(2 * math.log(2))
    assert NonSaturatingBCE().generator(ZEROS).item() == pytest.approx(math.log(2))
    confident = (torch.full((4,), 20.0), torch.full((4,), -20.0))
    assert NonSaturatingBCE().critic(*confident).item() < 1e-6
    # Smoothing only moves the real target, so a perfectly confident critic is penalised.
    assert NonSaturatingBCE(label_smoothing=0.1).critic(*confident).item() > 1.0


def test_lsgan_targets():
    assert LeastSquares().critic(torch.ones(4), ZEROS).item() == 0.0
    assert LeastSquares().generator(torch.ones(4)).item() == 0.0
    assert LeastSquares(label_smoothing=0.1).critic(torch.full((4,), 0.9), ZEROS).item() == pytest.approx(0.0)


def test_wgan_clips_every_critic_weight():
    critic = nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.fill_(3.0)
        critic.bias.fill_(-3.0)
    Wasserstein(clip=0.05).after_critic_step(critic)
    assert all(p.abs().max().item() == pytest.approx(0.05) for p in critic.parameters())
    assert Wasserstein().critic(torch.ones(4), ZEROS).item() == -1.0


class LinearCritic(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        direction = torch.zeros(x[0].numel())
        direction[0] = self.scale  # gradient norm of this critic is |scale| everywhere
        return x.flatten(1) @ direction


@pytest.mark.parametrize(("scale", "expected"), [(1.0, 0.0), (2.0, 10.0), (0.0, 10.0)])
def test_gradient_penalty_measures_the_gradient_norm(scale: float, expected: float):
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    penalty = WassersteinGP(gp_weight=10.0).penalty(
        LinearCritic(scale), real, fake, torch.zeros(6, dtype=torch.long)
    )
    assert penalty.item() == pytest.approx(expected, abs=1e-5)


def test_build_loss_defaults_and_errors():
    assert set(LOSSES) == {"bce", "lsgan", "wgan", "wgan-gp", "hinge"}
    assert build_loss("wgan").n_critic == 5 and build_loss("wgan-gp").n_critic == 5
    assert build_loss("hinge").n_critic == 1 and build_loss("hinge", n_critic=2).n_critic == 2
    assert build_loss("bce", label_smoothing=0.1).label_smoothing == 0.1
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        build_loss("nope")
    with pytest.raises(ValueError, match="n_critic must be at least 1"):
        build_loss("hinge", n_critic=0)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        build_loss("bce", label_smoothing=0.7)


def test_elbo_parts():
    target = torch.full((2, 1, 4, 4), -1.0)
    zeros = torch.zeros(2, 8)
    _, reconstruction, kl = elbo(target.clone(), target, zeros, zeros)
    assert kl.item() == pytest.approx(0.0) and reconstruction.item() == pytest.approx(0.0, abs=1e-6)
    loss, reconstruction, kl = elbo(torch.zeros_like(target), target, torch.ones(2, 8), zeros, kl_weight=0.5)
    assert kl.item() == pytest.approx(4.0)  # 0.5 * sum(mu^2) per image
    assert loss.item() == pytest.approx(reconstruction.item() + 2.0)

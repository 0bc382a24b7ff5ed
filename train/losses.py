"""Adversarial losses, chosen by name, and the VAE's evidence lower bound.

A loss sees only the critic's raw outputs (logits / scores) for real and fake batches. The two hooks cover
the WGAN family: ``penalty`` (gradient penalty, added to the critic loss) and ``after_critic_step``
(weight clipping). ``n_critic`` is how many critic steps the loop takes per generator step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AdversarialLoss:
    n_critic: int = 1

    def critic(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor | None:
        return None

    def after_critic_step(self, critic: nn.Module) -> None:
        return None


@dataclass
class NonSaturatingBCE(AdversarialLoss):
    """Goodfellow et al. (2014), generator maximises log D(G(z)); ``label_smoothing`` is one-sided."""

    label_smoothing: float = 0.0

    def critic(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real_target = torch.full_like(real, 1.0 - self.label_smoothing)
        return F.binary_cross_entropy_with_logits(real, real_target) + F.binary_cross_entropy_with_logits(
            fake, torch.zeros_like(fake)
        )

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake).mean()


@dataclass
class LeastSquares(AdversarialLoss):
    """Mao et al. (2017), targets 0 (fake) and 1 (real, lowered by one-sided ``label_smoothing``)."""

    label_smoothing: float = 0.0

    def critic(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((real - (1.0 - self.label_smoothing)) ** 2).mean() + 0.5 * (fake**2).mean()

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((fake - 1.0) ** 2).mean()


@dataclass
class Wasserstein(AdversarialLoss):
    """Arjovsky et al. (2017): critic scores, Lipschitz by clipping critic weights to ``[-clip, clip]``."""

    n_critic: int = 5
    clip: float = 0.01

    def critic(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return fake.mean() - real.mean()

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        return -fake.mean()

    def after_critic_step(self, critic: nn.Module) -> None:
        with torch.no_grad():
            for param in critic.parameters():
                param.clamp_(-self.clip, self.clip)


@dataclass
class WassersteinGP(Wasserstein):
    """Gulrajani et al. (2017): Lipschitz by a penalty on the critic's gradient norm at interpolates."""

    gp_weight: float = 10.0
    clip: float = field(default=0.0, repr=False)

    def penalty(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), dtype=real.dtype).to(real.device)
        mixed = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(mixed, labels).sum(), mixed, create_graph=True)
        return self.gp_weight * ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()

    def after_critic_step(self, critic: nn.Module) -> None:
        return None


@dataclass
class Hinge(AdversarialLoss):
    """Lim & Ye (2017) / Miyato et al. (2018), the usual partner of spectral norm and projection."""

    def critic(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        return -fake.mean()


LOSSES: dict[str, type[AdversarialLoss]] = {
    "bce": NonSaturatingBCE,
    "lsgan": LeastSquares,
    "wgan": Wasserstein,
    "wgan-gp": WassersteinGP,
    "hinge": Hinge,
}
DEFAULT_LOSS = "hinge"
VAE_LOSS = "elbo"
NLL_LOSS = "nll"  # autoregressive models: the negative log-likelihood of the data


def build_loss(name: str, n_critic: int | None = None, label_smoothing: float = 0.0) -> AdversarialLoss:
    """The named loss; ``n_critic=None`` keeps the loss's own default (1, or 5 for the WGANs)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; choose one of {sorted(LOSSES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if n_critic is not None and n_critic < 1:
        raise ValueError(f"n_critic must be at least 1, got {n_critic}")
    cls = LOSSES[name]
    if hasattr(cls, "label_smoothing"):
        loss = cls(label_smoothing=label_smoothing)
    elif label_smoothing:
        raise ValueError(f"label_smoothing applies to the bce and lsgan losses, not '{name}'")
    else:
        loss = cls()
    if n_critic is not None:
        loss.n_critic = n_critic
    return loss


def elbo(
    recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO per image for images in [-1, 1] (Bernoulli likelihood on [0, 1]); returns
    ``(loss, reconstruction, kl)``."""
    n = target.shape[0]
    recon_01 = ((recon + 1.0) / 2.0).clamp(0.0, 1.0)
    reconstruction = F.binary_cross_entropy(recon_01, (target + 1.0) / 2.0, reduction="sum") / n
    kl = -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp()) / n
    return reconstruction + kl_weight * kl, reconstruction, kl

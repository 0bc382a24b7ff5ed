"""One optimisation step of each training objective: adversarial (any loss in ``train.losses``), VAE or
maximum likelihood (autoregressive).

The loop hands every objective a real batch and the global step and gets back the numbers to log plus
whether the generator changed (so the loop knows when to update the EMA copy). ``state_modules`` names what
the resume state (``state.safetensors``) holds: one layout for every objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from train.augment import augment
from train.losses import AdversarialLoss, elbo
from train.pixelcnn import bits_per_dim


def cpu_randn(shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Noise drawn from the CPU generator on every device: the run's seed and resume state stay one stream."""
    return torch.randn(*shape).to(device, non_blocking=True)


@dataclass(frozen=True)
class VAESettings:
    """What the VAE's objective needs beyond its networks (its adversarial counterpart: a loss object)."""

    kl_weight: float = 1.0


@dataclass
class StepResult:
    stats: dict[str, float]
    generator_updated: bool


class GANObjective:
    def __init__(
        self,
        generator: nn.Module,
        critic: nn.Module,
        loss: AdversarialLoss,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        latent_dim: int,
        instance_noise: float = 0.0,
        augmentations: Sequence[str] = (),
        class_weight: float = 0.0,
        class_weight_g: float | None = None,
    ):
        self.generator, self.critic, self.loss = generator, critic, loss
        self.opt_g, self.opt_d = opt_g, opt_d
        self.latent_dim = latent_dim
        self.instance_noise = instance_noise
        self.augmentations = tuple(augmentations)
        self.class_weight = class_weight  # the critic's classifier term (and the generator's, by default)
        self.class_weight_g = class_weight if class_weight_g is None else class_weight_g

    def _critic_view(self, images: torch.Tensor, progress: float) -> torch.Tensor:
        """What the critic sees: DiffAugment, then instance noise (Sønderby et al., 2016) annealed to 0."""
        images = augment(images, self.augmentations)
        std = self.instance_noise * max(0.0, 1.0 - progress)
        return images + std * cpu_randn(images.shape, images.device) if std > 0 else images

    def step(self, real: torch.Tensor, labels: torch.Tensor, step: int, progress: float) -> StepResult:
        n = real.shape[0]
        with torch.no_grad():
            fake = self.generator(cpu_randn((n, self.latent_dim), real.device), labels)
        real_in, fake_in = self._critic_view(real, progress), self._critic_view(fake, progress)
        real_out, real_class = self._scores(real_in, labels)
        fake_out = self.critic(fake_in, labels)
        total = self.loss.critic(real_out, fake_out)
        penalty = self.loss.penalty(self.critic, real_in, fake_in, labels)
        if penalty is not None:
            total = total + penalty
        if real_class is not None:  # dual projection: the critic's class embeddings classify real images
            total = total + self.class_weight * real_class
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        self.loss.after_critic_step(self.critic)
        stats = {"d_loss": total.item(), "d_real": real_out.mean().item(), "d_fake": fake_out.mean().item()}
        if penalty is not None:
            stats["penalty"] = penalty.item()
        if real_class is not None:
            stats["d_class"] = real_class.item()

        if (step + 1) % self.loss.n_critic:
            return StepResult(stats, generator_updated=False)
        # Fresh latents for the generator step. Reusing the critic step's fake batch (as pytorch/examples'
        # DCGAN does) saved 22% CPU but the default recipe then lost diversity: recall 0.29 vs 0.65.
        self.critic.requires_grad_(False)
        fake = self.generator(cpu_randn((n, self.latent_dim), real.device), labels)
        fake_out, fake_class = self._scores(self._critic_view(fake, progress), labels)
        g_loss = self.loss.generator(fake_out)
        if fake_class is not None:  # ... and the generator's images are pushed to read as their label
            g_loss = g_loss + self.class_weight_g * fake_class
            stats["g_class"] = fake_class.item()  # logged at weight 0 too: how its images read
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.critic.requires_grad_(True)
        stats["g_loss"] = g_loss.item()
        return StepResult(stats, generator_updated=True)

    def _scores(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The critic's scores and, when the class term is on, its cross-entropy as a classifier."""
        if not self.class_weight:
            return self.critic(images, labels), None
        scores, logits = self.critic(images, labels, class_logits=True)
        return scores, nn.functional.cross_entropy(logits, labels)

    def state_modules(self) -> dict[str, Any]:
        return {"generator": self.generator, "critic": self.critic, "opt_g": self.opt_g, "opt_d": self.opt_d}


class VAEObjective:
    """Conditional VAE: ``encoder`` is q(z | x, y), ``generator`` the decoder p(x | z, y)."""

    def __init__(
        self,
        generator: nn.Module,
        encoder: nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_encoder: torch.optim.Optimizer,
        settings: VAESettings,
    ):
        self.generator, self.encoder = generator, encoder
        self.opt_g, self.opt_encoder = opt_g, opt_encoder
        self.kl_weight = settings.kl_weight

    def step(self, real: torch.Tensor, labels: torch.Tensor, step: int, progress: float) -> StepResult:
        mu, logvar = self.encoder(real, labels)
        z = mu + cpu_randn(mu.shape, mu.device) * torch.exp(0.5 * logvar)
        loss, reconstruction, kl = elbo(self.generator(z, labels), real, mu, logvar, self.kl_weight)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_encoder.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.opt_encoder.step()
        stats = {"loss": loss.item(), "reconstruction": reconstruction.item(), "kl": kl.item()}
        return StepResult(stats, generator_updated=True)

    def state_modules(self) -> dict[str, Any]:
        # Stored under the GAN's names ("critic", "opt_d"): one state layout for every variant, and runs
        # saved before the encoder had its own name still resume.
        return {
            "generator": self.generator,
            "critic": self.encoder,
            "opt_g": self.opt_g,
            "opt_d": self.opt_encoder,
        }


@dataclass(frozen=True)
class LikelihoodSettings:
    """What an autoregressive model's objective needs beyond its network: its pixel quantisation and depth."""

    levels: int
    layers: int


class LikelihoodObjective:
    """Maximum likelihood of an autoregressive ``generator`` (``train.pixelcnn``): the mean negative
    log-likelihood of the batch, logged in bits per dimension (one dimension a pixel)."""

    def __init__(self, generator: nn.Module, opt_g: torch.optim.Optimizer):
        self.generator, self.opt_g = generator, opt_g

    def step(self, real: torch.Tensor, labels: torch.Tensor, step: int, progress: float) -> StepResult:
        nll = self.generator(real, labels, nll=True)
        self.opt_g.zero_grad(set_to_none=True)
        nll.backward()
        self.opt_g.step()
        return StepResult({"bits_per_dim": bits_per_dim(nll.item())}, generator_updated=True)

    def state_modules(self) -> dict[str, Any]:
        return {"generator": self.generator, "opt_g": self.opt_g}

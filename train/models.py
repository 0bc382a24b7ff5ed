"""Generators, discriminators and the VAE encoder, and the registry of variants chosen by name.

Every generator has the same interface, so export and serving never care which variant made it:
``forward(z: float32 [N, latent_dim], label: int64 [N]) -> float32 [N, C, H, W]`` in [-1, 1].
Unconditional generators accept ``label`` and ignore it. Generators use only ONNX-exportable ops.
Conditional discriminators are projection discriminators (Miyato & Koyama, 2018):
``D(x, y) = linear(h(x)) + <embed(y), h(x)>``. Asked for ``class_logits``, they also return
``<embed(c), h(x)>`` for every class c: the same embeddings read as a classifier, which the class-aware
objective of dual projection GANs (Han et al., 2021) trains (``TrainConfig.class_weight``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from itertools import pairwise

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from train.losses import NLL_LOSS, VAE_LOSS
from train.pixelcnn import PixelCNN

LEAK = 0.2


@dataclass(frozen=True)
class Architecture:
    """Everything needed to build a variant's networks; recorded in ``config.json``."""

    latent_dim: int = 128
    num_classes: int = 10
    image_shape: tuple[int, int, int] = (28, 28, 1)  # H, W, C
    width: int = 64  # base channel count (DCGAN) / hidden units unit (MLP: 4w, 8w, 16w)
    embed_dim: int = 32  # label embedding fed to conditional generators and encoders
    spectral_norm: bool = True  # in the discriminator / critic
    minibatch_std: bool = False  # discriminator sees the spread of its batch (Karras et al., 2018)
    conditional_bn: bool = False  # conditional generators: the label also sets every batch norm's scale/shift
    levels: int | None = None  # autoregressive models only: grey levels per pixel (None elsewhere)
    layers: int | None = None  # autoregressive models only: gated layers after the first (None elsewhere)

    @property
    def channels(self) -> int:
        return self.image_shape[2]

    @property
    def pixels(self) -> int:
        height, width, channels = self.image_shape
        return height * width * channels

    def kwargs(self) -> dict:
        """The architecture knobs beyond the data's dimensions (config.json's ``architecture``); knobs of
        another family (None) are left out, so runs recorded before they existed stay the same run."""
        dims = ("latent_dim", "num_classes", "image_shape")
        return {k: v for k, v in asdict(self).items() if k not in dims and v is not None}

    @classmethod
    def from_config(cls, config: dict) -> Architecture:
        known = {f.name for f in fields(cls)}
        extra = {k: v for k, v in config.get("architecture", {}).items() if k in known}
        return cls(
            latent_dim=int(config["latent_dim"]),
            num_classes=int(config["num_classes"]),
            image_shape=tuple(int(d) for d in config["image_shape"]),  # type: ignore[arg-type]
            **extra,
        )


def _maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    return _spectral_norm(module) if enabled else module


def one_hot(label: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """int64 [N] → [N, num_classes]; written as a comparison so it exports to plain ONNX ops."""
    return (label.unsqueeze(1) == torch.arange(num_classes, device=label.device)).to(dtype)


class _LabelInput(nn.Module):
    """``[z, label_weights @ embedding]`` for conditional nets; ``z`` alone for unconditional ones."""

    def __init__(self, arch: Architecture, conditional: bool):
        super().__init__()
        self.embed = nn.Embedding(arch.num_classes, arch.embed_dim) if conditional else None
        self.out_features = arch.latent_dim + (arch.embed_dim if conditional else 0)

    def forward(self, z: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None or label_weights is None:
            return z
        return torch.cat([z, label_weights @ self.embed.weight], dim=1)


class _Norm(nn.Module):
    """Batch norm; when conditional, its scale and shift are chosen by the label (conditional batch norm,
    de Vries et al., 2017, as in the generator of Miyato & Koyama, 2018)."""

    def __init__(self, features: int, num_classes: int, conditional: bool, spatial: bool):
        super().__init__()
        norm = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        self.bn = norm(features, affine=not conditional)
        self.gain = nn.Parameter(torch.ones(num_classes, features)) if conditional else None
        self.bias = nn.Parameter(torch.zeros(num_classes, features)) if conditional else None

    def forward(self, h: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(h)
        if self.gain is None or self.bias is None or label_weights is None:
            return h
        shape = (h.shape[0], -1) + (1,) * (h.dim() - 2)
        return h * (label_weights @ self.gain).view(shape) + (label_weights @ self.bias).view(shape)


class _Generator(nn.Module):
    """Label handling shared by every generator: a label is its one-hot row of ``label_weights``, so
    ``forward(z, label) == forward_label_weights(z, one_hot(label))`` exactly."""

    def __init__(self, arch: Architecture, conditional: bool):
        super().__init__()
        self.num_classes = arch.num_classes
        self.conditional = conditional
        self.conditional_bn = conditional and arch.conditional_bn
        self.input = _LabelInput(arch, conditional)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        weights = one_hot(label, self.num_classes, z.dtype) if self.conditional else None
        return self.decode(z, weights)

    def forward_label_weights(self, z: torch.Tensor, label_weights: torch.Tensor) -> torch.Tensor:
        """The label-morph graph: ``label_weights`` float32 [N, num_classes] mixes the labels' embeddings
        (and conditional batch-norm parameters)."""
        return self.decode(z, label_weights if self.conditional else None)

    def decode(self, z: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class _Projection(nn.Module):
    """Output head ``linear(h) [+ <embed(y), h>]`` of a (projection) discriminator."""

    def __init__(self, features: int, arch: Architecture, conditional: bool):
        super().__init__()
        self.linear = _maybe_sn(nn.Linear(features, 1), arch.spectral_norm)
        embed = nn.Embedding(arch.num_classes, features)
        self.embed = _maybe_sn(embed, arch.spectral_norm) if conditional else None

    def forward(self, h: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(label) * h).sum(dim=1)
        return out

    def scores(
        self, h: torch.Tensor, label: torch.Tensor, class_logits: bool
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``forward``, and with ``class_logits`` also ``[N, num_classes]``: the projection term for every
        class (the shared linear term cancels in a softmax over classes)."""
        if not class_logits:
            return self(h, label)
        if self.embed is None:
            raise ValueError("an unconditional discriminator has no class embeddings to classify with")
        weight = self.embed.weight  # read once: with spectral norm every read is a power iteration
        logits = h @ weight.t()
        return self.linear(h).squeeze(1) + logits.gather(1, label.unsqueeze(1)).squeeze(1), logits


class MinibatchStd(nn.Module):
    """Append one feature: the average standard deviation of the features over groups of ``group`` images,
    so the discriminator can tell a collapsed batch from a varied one (ProGAN)."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        group = self.group if n % self.group == 0 else 1
        grouped = h.view(group, n // group, -1)
        spread = grouped.var(dim=0, unbiased=False).add(1e-8).sqrt().mean(dim=1)  # [n // group]
        return torch.cat([h, spread.repeat(group).unsqueeze(1)], dim=1)


def _features_out(arch: Architecture, features: int) -> tuple[list[nn.Module], int]:
    """The optional minibatch-std layer and the feature count after it."""
    return ([MinibatchStd()], features + 1) if arch.minibatch_std else ([], features)


class MLPGenerator(_Generator):
    def __init__(self, arch: Architecture, conditional: bool):
        super().__init__(arch, conditional)
        self.shape = (arch.channels, arch.image_shape[0], arch.image_shape[1])
        sizes = [self.input.out_features, 4 * arch.width, 8 * arch.width, 16 * arch.width]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.norms = nn.ModuleList(
            _Norm(size, arch.num_classes, self.conditional_bn, spatial=False) for size in sizes[2:]
        )
        self.out = nn.Linear(sizes[-1], arch.pixels)

    def decode(self, z: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
        h = torch.relu(self.hidden[0](self.input(z, label_weights)))
        for linear, norm in zip(self.hidden[1:], self.norms, strict=True):
            h = torch.relu(norm(linear(h), label_weights))
        return torch.tanh(self.out(h)).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, arch: Architecture, conditional: bool):
        super().__init__()
        hidden = [8 * arch.width, 4 * arch.width]
        self.net = nn.Sequential(
            nn.Flatten(),
            _maybe_sn(nn.Linear(arch.pixels, hidden[0]), arch.spectral_norm),
            nn.LeakyReLU(LEAK),
            _maybe_sn(nn.Linear(hidden[0], hidden[1]), arch.spectral_norm),
            nn.LeakyReLU(LEAK),
        )
        extra, features = _features_out(arch, hidden[1])
        self.net.extend(extra)
        self.head = _Projection(features, arch, conditional)

    def forward(
        self, x: torch.Tensor, label: torch.Tensor, class_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.head.scores(self.net(x), label, class_logits)


def _quarter(arch: Architecture) -> tuple[int, int]:
    height, width, _ = arch.image_shape
    if height % 4 or width % 4:
        raise ValueError(f"DCGAN variants need image height and width divisible by 4, got {arch.image_shape}")
    return height // 4, width // 4


class DCGenerator(_Generator):
    """z (+ label embedding) → linear → [2w, H/4, W/4] → two stride-2 transposed convolutions → tanh."""

    def __init__(self, arch: Architecture, conditional: bool):
        super().__init__(arch, conditional)
        self.base = (2 * arch.width, *_quarter(arch))
        base_size = self.base[0] * self.base[1] * self.base[2]
        self.project = nn.Linear(self.input.out_features, base_size, bias=False)
        self.norm0 = _Norm(base_size, arch.num_classes, self.conditional_bn, spatial=False)
        self.up1 = nn.ConvTranspose2d(2 * arch.width, arch.width, 4, stride=2, padding=1, bias=False)
        self.norm1 = _Norm(arch.width, arch.num_classes, self.conditional_bn, spatial=True)
        self.up2 = nn.ConvTranspose2d(arch.width, arch.channels, 4, stride=2, padding=1)

    def decode(self, z: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
        h = torch.relu(self.norm0(self.project(self.input(z, label_weights)), label_weights))
        h = torch.relu(self.norm1(self.up1(h.view(-1, *self.base)), label_weights))
        return torch.tanh(self.up2(h))


class _DCFeatures(nn.Module):
    """image → two stride-2 convolutions → flat features ``[N, 2w * H/4 * W/4]``."""

    def __init__(self, arch: Architecture):
        super().__init__()
        quarter_h, quarter_w = _quarter(arch)
        sn = arch.spectral_norm
        self.net = nn.Sequential(
            _maybe_sn(nn.Conv2d(arch.channels, arch.width, 4, stride=2, padding=1), sn),
            nn.LeakyReLU(LEAK),
            _maybe_sn(nn.Conv2d(arch.width, 2 * arch.width, 4, stride=2, padding=1), sn),
            nn.LeakyReLU(LEAK),
            nn.Flatten(),
        )
        extra, self.out_features = _features_out(arch, 2 * arch.width * quarter_h * quarter_w)
        self.net.extend(extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DCDiscriminator(nn.Module):
    def __init__(self, arch: Architecture, conditional: bool):
        super().__init__()
        self.features = _DCFeatures(arch)
        self.head = _Projection(self.features.out_features, arch, conditional)

    def forward(
        self, x: torch.Tensor, label: torch.Tensor, class_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.head.scores(self.features(x), label, class_logits)


class DCEncoder(nn.Module):
    """VAE encoder q(z | x, label): returns ``(mu, logvar)``."""

    def __init__(self, arch: Architecture, conditional: bool = True):
        super().__init__()
        self.features = _DCFeatures(
            Architecture(**{**asdict(arch), "spectral_norm": False, "minibatch_std": False})
        )
        self.embed = nn.Embedding(arch.num_classes, arch.embed_dim) if conditional else None
        size = self.features.out_features + (arch.embed_dim if conditional else 0)
        self.out = nn.Linear(size, 2 * arch.latent_dim)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        if self.embed is not None:
            h = torch.cat([h, self.embed(label)], dim=1)
        mu, logvar = self.out(h).chunk(2, dim=1)
        return mu, logvar


@dataclass(frozen=True)
class Variant:
    """A model family: its generator and the network trained beside it, which also says how it is trained:
    a ``critic`` (discriminator) for a GAN, trained with any adversarial loss in ``train.losses``, an
    ``encoder`` for a VAE, trained with the evidence lower bound, or neither for an ``autoregressive``
    model (``train.pixelcnn``), trained by maximum likelihood; its "latent" is the sampling noise, one draw
    per pixel."""

    generator: Callable[[Architecture, bool], nn.Module]
    conditional: bool
    critic: Callable[[Architecture, bool], nn.Module] | None = None
    encoder: Callable[[Architecture, bool], nn.Module] | None = None
    description: str = ""
    autoregressive: bool = False

    def __post_init__(self) -> None:
        kinds = (self.critic is not None) + (self.encoder is not None) + self.autoregressive
        if kinds != 1:
            raise ValueError("a variant has either a critic (GAN), an encoder (VAE) or is autoregressive")

    @property
    def adversarial(self) -> bool:
        return self.critic is not None

    @property
    def fixed_loss(self) -> str | None:
        """The loss this variant always trains with (the VAE's ELBO, the autoregressive NLL); None: an
        adversarial loss, by name."""
        if self.autoregressive:
            return NLL_LOSS
        return None if self.adversarial else VAE_LOSS


VARIANTS: dict[str, Variant] = {
    "mlp": Variant(MLPGenerator, False, critic=MLPDiscriminator, description="unconditional MLP GAN"),
    "cgan": Variant(
        MLPGenerator, True, critic=MLPDiscriminator, description="conditional MLP GAN, projection D"
    ),
    "dcgan": Variant(DCGenerator, False, critic=DCDiscriminator, description="unconditional DCGAN"),
    "cdcgan": Variant(
        DCGenerator, True, critic=DCDiscriminator, description="conditional DCGAN, projection D"
    ),
    "cvae": Variant(DCGenerator, True, encoder=DCEncoder, description="conditional VAE"),
    "pixelcnn": Variant(PixelCNN, True, autoregressive=True, description="conditional gated PixelCNN"),
}
DEFAULT_VARIANT = "cdcgan"


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown model '{name}'; choose one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def build_generator(name: str, arch: Architecture) -> nn.Module:
    variant = get_variant(name)
    return variant.generator(arch, variant.conditional)


def build_critic(name: str, arch: Architecture) -> nn.Module:
    """The discriminator of an adversarial variant."""
    variant = get_variant(name)
    if variant.critic is None:
        kind = "autoregressive" if variant.autoregressive else "a VAE: it has an encoder"
        raise ValueError(f"model '{name}' is {kind}, not a critic")
    return variant.critic(arch, variant.conditional)


def build_encoder(name: str, arch: Architecture) -> nn.Module:
    """The encoder q(z | x, label) of a VAE variant."""
    variant = get_variant(name)
    if variant.encoder is None:
        kind = "autoregressive" if variant.autoregressive else "a GAN: it has a critic"
        raise ValueError(f"model '{name}' is {kind}, not an encoder")
    return variant.encoder(arch, variant.conditional)

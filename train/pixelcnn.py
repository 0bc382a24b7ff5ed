"""A conditional gated PixelCNN (van den Oord et al., 2016, "Conditional Image Generation with PixelCNN
Decoders"): p(x | y) = prod_i p(x_i | x_<i, y) over the pixels in raster order, each a categorical over
``levels`` grey levels.

Two stacks without a blind spot: the vertical stack sees the rows above (its output is shifted down one row
before the horizontal stack reads it), the horizontal stack sees the pixels to the left in the current row.
Every gated layer is ``tanh(a) * sigmoid(b)`` with the label's embedding added to ``a`` and ``b`` as a bias.

The same interface as every generator, ``forward(z, label) -> [N, C, H, W]`` in [-1, 1]: ``z`` [N, H * W] is
the sampling noise, one standard normal draw per pixel (the service's seed contract), turned into a uniform
``u = Phi(z)``; pixel i takes the smallest level whose cumulative probability exceeds ``u[:, i]``
(inverse-CDF sampling), so a seed fixes every draw. Grey level k is the value ``-1 + 2k / (levels - 1)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HELD_OUT_BPD = (
    "held_out_bits_per_dim"  # autoregressive models: logged with every epoch, on the held-out split
)
DEFAULT_LEVELS = 4  # grey levels per pixel (docs/training.md, "PixelCNN"): 0, 85, 170, 255
DEFAULT_LAYERS = 5  # gated layers after the first (masked) one
KERNEL = 5  # vertical stack: (KERNEL // 2 + 1) x KERNEL; horizontal stack: 1 x (KERNEL // 2 + 1)
LN2 = math.log(2.0)


def level_values(levels: int) -> torch.Tensor:
    """float32 [levels]: the model-range value of each grey level, -1 .. 1."""
    return torch.linspace(-1.0, 1.0, levels, dtype=torch.float32)


def quantise(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Model-range images [-1, 1] → int64 grey levels 0 .. levels - 1 (nearest level)."""
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * 0.5 * (levels - 1)).long()


def uniform_from_normal(z: torch.Tensor) -> torch.Tensor:
    """``Phi(z)``: standard normal draws → uniform on (0, 1), the inverse-CDF sampler's noise."""
    return 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """logits [N, L], u [N] → int64 [N]: the smallest level whose cumulative probability exceeds u."""
    cdf = torch.cumsum(torch.softmax(logits, dim=1), dim=1)
    count = (cdf <= u.unsqueeze(1)).to(torch.float32).sum(dim=1)
    return torch.clamp(count, max=logits.shape[1] - 1).long()


def down_shift(h: torch.Tensor) -> torch.Tensor:
    """Row i receives row i - 1 (row 0 zeros): the vertical stack's view of strictly earlier rows."""
    return F.pad(h, (0, 0, 1, 0))[:, :, :-1, :]


class _StackConvs(nn.Module):
    """The vertical conv (rows above and the current row) and the horizontal conv (pixels to the left, and
    the current pixel unless ``first``) of one layer, each to ``2 * channels`` (the gate's two halves)."""

    def __init__(self, in_channels: int, channels: int, first: bool):
        super().__init__()
        half = KERNEL // 2
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (half + 1, KERNEL))
        self.horizontal = nn.Conv2d(in_channels, 2 * channels, (1, half + 1))
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        mask = torch.ones(1, 1, 1, half + 1)
        if first:  # mask A: the first layer must not see the pixel it predicts
            mask[..., -1] = 0.0
        self.register_buffer("mask", mask, persistent=False)

    def vertical_pre(self, v: torch.Tensor) -> torch.Tensor:
        half = KERNEL // 2
        return self.vertical(F.pad(v, (half, half, half, 0)))

    def horizontal_pre(self, h: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        """``link``: ``self.link(down_shift(v_pre))``, the vertical stack's view of the rows above."""
        half = KERNEL // 2
        h_pre = F.conv2d(F.pad(h, (half, 0, 0, 0)), self.horizontal.weight * self.mask, self.horizontal.bias)
        return h_pre + link


def _gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int, first: bool):
        super().__init__()
        self.first = first
        self.convs = _StackConvs(in_channels, channels, first)
        self.condition = nn.Embedding(num_classes, 4 * channels)  # biases of v's and h's gates
        self.out = nn.Conv2d(channels, channels, 1)

    def vertical(self, v: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The vertical stack's step: ``(v_out, link)``, ``link`` the term row i of the horizontal stack adds
        (it depends on the rows above i only)."""
        v_pre = self.convs.vertical_pre(v)
        v_bias = self.condition(label)[:, : v_pre.shape[1], None, None]
        return _gate(v_pre + v_bias), self.convs.link(down_shift(v_pre))

    def horizontal(self, h: torch.Tensor, link: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h_pre = self.convs.horizontal_pre(h, link)
        h_bias = self.condition(label)[:, h_pre.shape[1] :, None, None]
        h_out = self.out(_gate(h_pre + h_bias))
        return h_out if self.first else h + h_out


class PixelCNN(nn.Module):
    """Conditional gated PixelCNN; ``arch.width`` hidden channels, ``arch.layers`` gated layers after the
    first and ``arch.levels`` grey levels. Single-channel images only."""

    def __init__(self, arch, conditional: bool = True):
        super().__init__()
        height, width, channels = arch.image_shape
        if channels != 1:
            raise ValueError(f"pixelcnn models single-channel images, got {channels} channels")
        self.levels = int(arch.levels or DEFAULT_LEVELS)
        layers = int(arch.layers if arch.layers is not None else DEFAULT_LAYERS)
        if self.levels < 2 or layers < 0:
            raise ValueError(f"pixelcnn needs levels >= 2 and layers >= 0, got {self.levels}, {layers}")
        self.height, self.width = height, width
        self.num_classes = arch.num_classes
        self.conditional = conditional
        hidden = arch.width
        self.layers = nn.ModuleList(
            [GatedLayer(1, hidden, arch.num_classes, first=True)]
            + [GatedLayer(hidden, hidden, arch.num_classes, first=False) for _ in range(layers)]
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, self.levels, 1)
        )
        self.register_buffer("values", level_values(self.levels), persistent=False)

    def logits(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """x [N, 1, R, W] in [-1, 1] (R <= H rows: the outputs of rows < R never look further down) → logits
        [N, levels, R, W]; pixel i's logits depend only on the pixels before i in raster order."""
        return self.horizontal_logits(x, self.links(x, label), label)

    def _label(self, label: torch.Tensor) -> torch.Tensor:
        return label if self.conditional else torch.zeros_like(label)

    def links(self, x: torch.Tensor, label: torch.Tensor) -> list[torch.Tensor]:
        """The vertical stack over x [N, 1, R, W]: each layer's link term [N, 2 * width, R, W]; row i's depend
        on the rows above i only."""
        label, v, links = self._label(label), x, []
        for layer in self.layers:
            v, link = layer.vertical(v, label)
            links.append(link)
        return links

    def horizontal_logits(
        self, x: torch.Tensor, links: list[torch.Tensor], label: torch.Tensor
    ) -> torch.Tensor:
        """The horizontal stack over the rows of ``x`` given the ``links`` of those rows → logits. Each row on
        its own: row r's logits from row r of ``x`` and of the links."""
        label, h = self._label(label), x
        for layer, link in zip(self.layers, links, strict=True):
            h = layer.horizontal(h, link, label)
        return self.head(h)

    def row_links(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The links of the last row of x [N, 1, R, W] (they depend on rows 0..R-2 only):
        [N, layers, 2 * width, W]."""
        return torch.stack([link[:, :, -1] for link in self.links(x, label)], dim=1)

    def row_logits(self, row: torch.Tensor, links: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """One row [N, 1, 1, W] and its ``row_links`` → its logits [N, levels, W]."""
        per_layer = [links[:, i].unsqueeze(2) for i in range(links.shape[1])]
        return self.horizontal_logits(row, per_layer, label)[:, :, 0]

    def nll(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood in nats per pixel of model-range images quantised to the levels."""
        target = quantise(x, self.levels)
        inputs = self.values[target]  # the quantised image, as the sampler feeds it
        return F.cross_entropy(self.logits(inputs, label), target.squeeze(1))

    def forward(self, z: torch.Tensor, label: torch.Tensor, nll: bool = False) -> torch.Tensor:
        """Sample: ``z`` [N, H * W] standard normal noise → images [N, 1, H, W] in [-1, 1]. Once per row r the
        vertical stack runs on rows 0..r (its links for row r depend on the rows above only), then once per
        pixel the horizontal stack runs on row r alone: exact, as the masks make it so.
        ``nll``: ``z`` is a batch of images instead and the result their ``nll`` (the training step goes
        through ``forward`` so that a DistributedDataParallel wrapper sees it)."""
        if nll:
            return self.nll(z, label)
        u = uniform_from_normal(z)
        canvas = torch.full(
            (z.shape[0], 1, self.height, self.width), -1.0, dtype=torch.float32, device=z.device
        )
        for row in range(self.height):
            links = self.row_links(canvas[:, :, : row + 1], label)
            for column in range(self.width):
                logits = self.row_logits(canvas[:, :, row : row + 1], links, label)[:, :, column]
                canvas[:, 0, row, column] = self.values[inverse_cdf(logits, u[:, row * self.width + column])]
        return canvas


def bits_per_dim(nats_per_pixel: float) -> float:
    return nats_per_pixel / LN2


@torch.no_grad()
def held_out_bits_per_dim(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    """Mean NLL in bits per dimension of model-range ``images`` (the held-out split), ``batch`` at a time."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch):
        chunk = slice(start, start + batch)
        total += model(images[chunk], labels[chunk], nll=True).item() * len(images[chunk])
    return bits_per_dim(total / max(1, len(images)))

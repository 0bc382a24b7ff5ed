"""Learning-rate decay over a run's steps: the factor each optimiser's base rate is multiplied by.

The factor depends only on the step and the run's total steps, so a resume at step s trains exactly as the
uninterrupted run would (as long as ``--epochs`` is unchanged: more epochs stretch the schedule).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

LR_DECAYS: dict[str, Callable[[float], float]] = {
    "none": lambda progress: 1.0,
    "linear": lambda progress: 1.0 - progress,  # to 0 at the last step (as in SNGAN's and BigGAN's recipes)
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
}
DEFAULT_LR_DECAY = "none"


def check_lr_decay(name: str) -> Callable[[float], float]:
    if name not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, got '{name}'")
    return LR_DECAYS[name]


def set_learning_rates(
    optimisers: Sequence[tuple[torch.optim.Optimizer, float]],
    decay: Callable[[float], float],
    progress: float,
) -> None:
    """Every optimiser's rate := its base rate x the decay at ``progress`` (0 at the first step, 1 after the
    last)."""
    factor = decay(min(max(progress, 0.0), 1.0))
    for optimiser, base in optimisers:
        for group in optimiser.param_groups:
            group["lr"] = base * factor

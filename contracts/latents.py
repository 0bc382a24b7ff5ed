"""Latent vectors: seed → latent, truncation, interpolation and averaging, shared by the service and its
clients: NumPy, and the compiled ``contracts._normals`` where the install built it (the same values).

The seed scheme is part of the API and portable: image ``i`` of a request with seed ``s`` uses the
latent of seed ``s + i``, and the latent of one seed is
``numpy.random.Generator(numpy.random.PCG64(seed)).standard_normal(latent_dim, dtype=float32)``.
So a client reproduces any image from its seed alone, and ``(seed, n)`` is a prefix of ``(seed, n + 1)``.
Truncation scales a latent towards the mean of the prior (the origin): ``z * t``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import numpy as np

from contracts import native_latents, seed_sequence

MAX_SEED = 2**32 - 1
# from this many seeds, seeding their generators together (contracts.seed_sequence) is cheaper than one by
# one: about 7 against 17-31 µs a seed at 256, a fixed ~160 µs for the vectorised hash
VECTORISED_MIN_SEEDS = 16
_PARALLEL_EPS = 1e-6


def choose_seed(seed: int | None, count: int = 1, rng: random.Random | None = None) -> int:
    """``seed``, or a random one that leaves room for ``count`` consecutive seeds. Seeds are not secrets:
    ``random`` (seeded from the OS at start and after a fork) spares a system call per request."""
    if seed is not None:
        return seed
    return (rng or random).randrange(max(1, MAX_SEED - count + 2))


def latent_for_seed(seed: int, latent_dim: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(latent_dim, dtype=np.float32)


def latents_for_seeds(seeds: Iterable[int] | np.ndarray, latent_dim: int) -> np.ndarray:
    if not (isinstance(seeds, np.ndarray) and seeds.dtype.kind in "iu"):
        seeds = [int(seed) for seed in seeds]  # exact for any integer; refuses what is not one
    words = native_latents.one_word(seeds)
    if words is not None:  # compiled, without the interpreter lock: the same values
        return native_latents.standard_normal(words, latent_dim)
    listed = seeds if isinstance(seeds, list) else [int(seed) for seed in seeds]
    if len(listed) >= VECTORISED_MIN_SEEDS:  # the same generators, their seeding hashed all at once
        rows = [g.standard_normal(latent_dim, dtype=np.float32) for g in seed_sequence.generators(listed)]
    else:
        rows = [latent_for_seed(seed, latent_dim) for seed in listed]
    return np.stack(rows) if rows else np.zeros((0, latent_dim), dtype=np.float32)


def request_seeds(seed: int, n: int) -> np.ndarray:
    return np.arange(seed, seed + n, dtype=np.int64)


def request_latents(seed: int, n: int, latent_dim: int, truncation: float = 1.0) -> np.ndarray:
    """The ``n`` latents a request with this seed generates."""
    return truncate(latents_for_seeds(request_seeds(seed, n), latent_dim), truncation)


def truncate(latents: np.ndarray, truncation: float) -> np.ndarray:
    if not 0.0 < truncation <= 1.0:
        raise ValueError(f"truncation must be in (0, 1], got {truncation}")
    return (latents * np.float32(truncation)).astype(np.float32)


def lerp(a: np.ndarray, b: np.ndarray, ts: Sequence[float] | np.ndarray) -> np.ndarray:
    t = np.asarray(ts, dtype=np.float32)[:, None]
    return ((1.0 - t) * a[None, :] + t * b[None, :]).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, ts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Spherical interpolation along the great circle between the directions of ``a`` and ``b``
    (White, 2016), exact at both ends; falls back to ``lerp`` for (anti)parallel vectors."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64) * np.linalg.norm(b64)
    if norms == 0.0:
        return lerp(a, b, ts)
    omega = np.arccos(np.clip(np.dot(a64, b64) / norms, -1.0, 1.0))
    sin_omega = np.sin(omega)
    if sin_omega < _PARALLEL_EPS:
        return lerp(a, b, ts)
    t = np.asarray(ts, dtype=np.float64)[:, None]
    out = (np.sin((1.0 - t) * omega) / sin_omega) * a64 + (np.sin(t * omega) / sin_omega) * b64
    return out.astype(np.float32)


def interpolation_steps(steps: int) -> np.ndarray:
    """``steps`` evenly spaced positions from 0 to 1, both ends included."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    return np.linspace(0.0, 1.0, steps, dtype=np.float64)


def mean_latent(seeds: Iterable[int], latent_dim: int) -> np.ndarray:
    """The averaged latent of several seeds, as the DCGAN paper averages three exemplars per concept."""
    latents = latents_for_seeds(seeds, latent_dim)
    if len(latents) == 0:
        raise ValueError("mean_latent needs at least one seed")
    return latents.mean(axis=0).astype(np.float32)


def weighted_sum(weights: Sequence[float], latents: Sequence[np.ndarray]) -> np.ndarray:
    if len(weights) != len(latents) or not latents:
        raise ValueError("weighted_sum needs one weight per latent and at least one latent")
    total = np.zeros_like(latents[0], dtype=np.float64)
    for weight, latent in zip(weights, latents, strict=True):
        total += float(weight) * latent.astype(np.float64)
    return total.astype(np.float32)

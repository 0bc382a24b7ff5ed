"""The seed contract's latents drawn by the compiled ``contracts._normals``: about 1 µs a 128-dim row against
3.4 µs with NumPy (``contracts.latents``' other path), and without holding the interpreter lock, so an
inference thread drawing a bulk batch's latents does not stall the event loop or the other stream
(reports/bench/NOTES.md).

The module is optional: built by ``pip install`` where a C compiler is found (setup.py). At import its rows
are compared with NumPy's own for a few seeds; if it is missing or differs (a NumPy release that changed its
ziggurat), ``AVAILABLE`` is False, ``UNAVAILABLE_BECAUSE`` says why, and callers draw with NumPy."""

from __future__ import annotations

import numpy as np

ONE_WORD_SEEDS = 1 << 32  # the module takes seeds below 2**32 (every request seed)
# the edges and 58 more seeds of 512 normals: the ziggurat's rarer paths (~0.7 % of draws, the tail far less)
# are taken hundreds of times at import (~2 ms); the library linked at build time may be another NumPy's
CHECK_SEEDS = (0, 1, 7, 12345, 2**31, ONE_WORD_SEEDS - 1, *range(1000, 1058))
CHECK_DIM = 512

try:
    from contracts import _normals
except ImportError as exc:  # not built (no C compiler at install), or built but not loadable
    _normals = None
    _import_error = f"contracts._normals cannot be imported: {exc}"


def _reference(seeds: tuple[int, ...], dim: int) -> np.ndarray:
    return np.stack(
        [np.random.Generator(np.random.PCG64(s)).standard_normal(dim, dtype=np.float32) for s in seeds]
    )


def _unavailable_because() -> str | None:
    if _normals is None:
        return _import_error
    drawn = np.empty((len(CHECK_SEEDS), CHECK_DIM), dtype=np.float32)
    _normals.standard_normal(np.array(CHECK_SEEDS, dtype=np.uint32), drawn, CHECK_DIM)
    if not np.array_equal(drawn.view(np.uint32), _reference(CHECK_SEEDS, CHECK_DIM).view(np.uint32)):
        return f"contracts._normals differs from NumPy {np.__version__}'s standard_normal"
    return None


UNAVAILABLE_BECAUSE = _unavailable_because()
AVAILABLE = UNAVAILABLE_BECAUSE is None
SAMPLER = "native" if AVAILABLE else "numpy"  # what draws the latents, as gan-serve reports it


def one_word(seeds: np.ndarray | list[int]) -> np.ndarray | None:
    """``seeds`` (an integer array, or Python ints) as uint32 when the module is usable and every seed is in
    [0, 2**32), else None."""
    if not AVAILABLE or len(seeds) == 0:
        return None
    if isinstance(seeds, np.ndarray):
        if seeds.dtype.kind not in "iu":
            return None
        low, high = seeds.min(), seeds.max()  # builtin min/max walk an array element by element
    else:
        low, high = min(seeds), max(seeds)
    if low < 0 or high >= ONE_WORD_SEEDS:
        return None
    return np.asarray(seeds, dtype=np.uint32)


def standard_normal(seeds: np.ndarray, latent_dim: int) -> np.ndarray:
    """Row i: ``Generator(PCG64(seeds[i])).standard_normal(latent_dim, dtype=float32)``; ``seeds`` uint32
    (``one_word``'s result; another dtype is refused, never wrapped)."""
    out = np.empty((len(seeds), latent_dim), dtype=np.float32)
    _normals.standard_normal(np.ascontiguousarray(seeds), out, latent_dim)
    return out

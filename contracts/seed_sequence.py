"""``numpy.random.PCG64(seed)`` for many seeds at once, with the same streams.

``PCG64(seed)`` spends most of its ~19 µs in ``SeedSequence(seed).generate_state(4, uint64)``: a fixed
32-bit hash (Melissa O'Neill's seed_seq, as NumPy implements it in ``bit_generator.pyx``) run one seed at a
time. Here the same hash runs over an array of seeds in NumPy's wrapping uint32 arithmetic, and each
``PCG64`` is built from its precomputed words (~4 µs). Only seeds below 2**32 (a one-word entropy pool,
which is all a request's seeds are) take this path. At import the result is compared with NumPy's own on a
few seeds; if a NumPy release ever changed the hash, ``generators`` falls back to ``PCG64(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.random.bit_generator import ISeedSequence

# numpy/random/bit_generator.pyx
INIT_A, MULT_A = 0x43B0D7E5, 0x931E8875
INIT_B, MULT_B = 0x8B51F9DD, 0x58F38DED
MIX_MULT_L, MIX_MULT_R = 0xCA01F9DD, 0x4973F715
XSHIFT = np.uint32(16)
MASK32 = 0xFFFFFFFF
POOL_SIZE = 4
PCG64_WORDS = 4  # uint64 words PCG64 asks of its seed sequence: 128-bit state and increment
ONE_WORD_SEEDS = 1 << 32
CHECK_SEEDS = (0, 1, 12345, ONE_WORD_SEEDS - 1)


class _Words(ISeedSequence):
    """A seed sequence whose state is already computed."""

    __slots__ = ("words",)

    def __init__(self, words: np.ndarray):
        self.words = words

    def generate_state(self, n_words: int, dtype: type = np.uint32) -> np.ndarray:
        return self.words


def pcg64_words(seeds: np.ndarray) -> np.ndarray:
    """``SeedSequence(s).generate_state(4, np.uint64)`` for each seed ``s`` (uint32) as rows [n, 4]."""
    seeds = np.asarray(seeds, dtype=np.uint32)
    hash_const = INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal hash_const
        value = value ^ np.uint32(hash_const)
        hash_const = (hash_const * MULT_A) & MASK32
        value = value * np.uint32(hash_const)
        return value ^ (value >> XSHIFT)

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = np.uint32(MIX_MULT_L) * x - np.uint32(MIX_MULT_R) * y
        return result ^ (result >> XSHIFT)

    zero = np.zeros_like(seeds)
    pool = [hashmix(seeds)] + [hashmix(zero) for _ in range(POOL_SIZE - 1)]
    for src in range(POOL_SIZE):
        for dst in range(POOL_SIZE):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    words = np.empty((len(seeds), 2 * PCG64_WORDS), dtype=np.uint32)
    hash_const = INIT_B
    for i in range(2 * PCG64_WORDS):
        value = pool[i % POOL_SIZE] ^ np.uint32(hash_const)
        hash_const = (hash_const * MULT_B) & MASK32
        value = value * np.uint32(hash_const)
        words[:, i] = value ^ (value >> XSHIFT)
    return words.view(np.uint64)


def _agrees_with_numpy() -> bool:
    words = pcg64_words(np.array(CHECK_SEEDS))
    return all(
        np.array_equal(row, np.random.SeedSequence(seed).generate_state(PCG64_WORDS, np.uint64))
        for seed, row in zip(CHECK_SEEDS, words, strict=True)
    )


VECTORISED = _agrees_with_numpy()


def generators(seeds: Sequence[int]) -> list[np.random.Generator]:
    """``Generator(PCG64(s))`` for each seed, each in the state ``PCG64(s)`` starts in."""
    if VECTORISED and all(0 <= seed < ONE_WORD_SEEDS for seed in seeds):
        return [np.random.Generator(np.random.PCG64(_Words(row))) for row in pcg64_words(np.array(seeds))]
    return [np.random.Generator(np.random.PCG64(seed)) for seed in seeds]

"""The seed contract holds on NumPy's fast path: generators seeded together draw exactly what ``PCG64(seed)``
draws, for every kind of seed a request can carry. (The compiled path: tests/test_native_latents.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from contracts import latents, native_latents, seed_sequence

LATENT_DIM = 128
RNG = np.random.default_rng(20261201)
SEEDS = np.concatenate(
    [
        np.arange(0, 2000),
        RNG.integers(0, seed_sequence.ONE_WORD_SEEDS, 3000),
        [latents.MAX_SEED - 1, latents.MAX_SEED],
    ]
)


def reference(seeds) -> np.ndarray:
    return np.stack(
        [
            np.random.Generator(np.random.PCG64(int(s))).standard_normal(LATENT_DIM, dtype=np.float32)
            for s in seeds
        ]
    )


def test_the_hash_is_numpys_seed_sequence():
    words = seed_sequence.pcg64_words(SEEDS)
    for seed, row in zip(SEEDS[::7], words[::7], strict=True):
        np.testing.assert_array_equal(row, np.random.SeedSequence(int(seed)).generate_state(4, np.uint64))
    assert seed_sequence.VECTORISED


def test_generators_draw_bit_identical_latents():
    drawn = np.stack(
        [g.standard_normal(LATENT_DIM, dtype=np.float32) for g in seed_sequence.generators(list(SEEDS))]
    )
    np.testing.assert_array_equal(drawn.view(np.uint32), reference(SEEDS).view(np.uint32))


@pytest.fixture
def numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latents drawn with NumPy as without the compiled module."""
    monkeypatch.setattr(native_latents, "AVAILABLE", False)


@pytest.mark.parametrize("n", [1, latents.VECTORISED_MIN_SEEDS - 1, latents.VECTORISED_MIN_SEEDS, 300])
def test_request_latents_are_the_seed_contracts_on_both_numpy_paths(n, numpy_only):
    seed = latents.MAX_SEED - n + 1  # the highest seeds a request of n may use
    for start in (0, 77, seed):
        np.testing.assert_array_equal(
            latents.request_latents(start, n, LATENT_DIM), reference(range(start, start + n))
        )


def test_seeds_beyond_one_word_take_numpys_own_seeding():
    seeds = [seed_sequence.ONE_WORD_SEEDS, 2**40 + 3] * latents.VECTORISED_MIN_SEEDS
    np.testing.assert_array_equal(latents.latents_for_seeds(seeds, LATENT_DIM), reference(seeds))

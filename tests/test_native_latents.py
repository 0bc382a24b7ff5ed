"""The compiled latents (contracts._normals) are the seed contract's, bit for bit, and drawn without the
interpreter lock; the install builds them where a C compiler exists."""

from __future__ import annotations

import shutil
import sysconfig
import threading
import time

import numpy as np
import pytest

from contracts import latents, native_latents

LATENT_DIM = 128
RNG = np.random.default_rng(20261202)
# 6,000 seeds of 128 draws: the ziggurat's rare paths (~0.7 % of draws) are taken thousands of times
SEEDS = np.concatenate(
    [np.arange(0, 3000), RNG.integers(0, native_latents.ONE_WORD_SEEDS, 3000), [latents.MAX_SEED]]
)

requires_native = pytest.mark.skipif(
    not native_latents.AVAILABLE, reason=f"NOT CHECKED: {native_latents.UNAVAILABLE_BECAUSE}"
)


def reference(seeds, dim: int = LATENT_DIM) -> np.ndarray:
    return np.stack(
        [np.random.Generator(np.random.PCG64(int(s))).standard_normal(dim, dtype=np.float32) for s in seeds]
    )


def test_the_install_built_the_module_where_a_c_compiler_exists():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"NOT CHECKED: no C compiler ({compiler}) here; latents drawn with NumPy")
    assert native_latents.AVAILABLE, native_latents.UNAVAILABLE_BECAUSE
    assert native_latents.SAMPLER == "native"


@requires_native
@pytest.mark.parametrize("dim", [LATENT_DIM, 1, 3, 100])  # odd sizes: a row's last 32-bit half unused
def test_native_rows_are_numpys_bit_for_bit(dim):
    seeds = SEEDS if dim == LATENT_DIM else SEEDS[::10]
    drawn = native_latents.standard_normal(native_latents.one_word(seeds), dim)
    np.testing.assert_array_equal(drawn.view(np.uint32), reference(seeds, dim).view(np.uint32))


@requires_native
def test_latents_for_seeds_takes_the_native_path_for_one_word_seeds_only(monkeypatch):
    calls = []
    draw = native_latents.standard_normal
    monkeypatch.setattr(native_latents, "standard_normal", lambda s, d: calls.append(len(s)) or draw(s, d))
    np.testing.assert_array_equal(latents.request_latents(77, 40, LATENT_DIM), reference(range(77, 117)))
    beyond = [native_latents.ONE_WORD_SEEDS, 5]
    np.testing.assert_array_equal(latents.latents_for_seeds(beyond, LATENT_DIM), reference(beyond))
    assert calls == [40]
    with pytest.raises(ValueError, match="non-negative"):
        latents.latents_for_seeds([3, -1], LATENT_DIM)
    assert latents.latents_for_seeds([], LATENT_DIM).shape == (0, LATENT_DIM)


@requires_native
def test_wrong_buffers_are_refused_never_reinterpreted():
    draw = native_latents._normals.standard_normal
    seeds, out = np.zeros(3, np.uint32), np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match="seeds: expected a C-contiguous uint32 array, got format 'l'"):
        draw(seeds.astype(np.int64), out, 4)
    with pytest.raises(TypeError, match=r"seeds: .* got format '>I'"):
        draw(seeds.astype(">u4"), out, 4)
    with pytest.raises(
        TypeError, match="out: expected a C-contiguous writable float32 array, got format 'd'"
    ):
        draw(seeds, np.zeros((3, 2), np.float64), 4)  # as many bytes as the right buffer
    with pytest.raises(BufferError):
        draw(seeds, bytes(48), 4)  # read-only
    with pytest.raises(ValueError, match="len\\(seeds\\) rows of dim floats"):
        draw(seeds, np.zeros((2, 4), np.float32), 4)
    with pytest.raises(ValueError, match="rows of dim floats"):
        draw(np.zeros(1, np.uint32), np.zeros(4, np.float32), 2**62 + 4)  # rows x dim overflows: no crash
    with pytest.raises(TypeError, match="uint32"):
        native_latents.standard_normal(np.array([-1, 5]), 4)  # never wrapped to 2**32 - 1


def test_latents_for_seeds_is_exact_for_any_integers_and_refuses_the_rest():
    mixed = [2**63 + 1, 5]  # as one array these would become float64 and lose the first seed's low bits
    np.testing.assert_array_equal(latents.latents_for_seeds(mixed, 8), reference(mixed, 8))
    np.testing.assert_array_equal(latents.latents_for_seeds(["5", "6"], 8), reference([5, 6], 8))
    np.testing.assert_array_equal(latents.latents_for_seeds(np.array([3.0, 4.0]), 8), reference([3, 4], 8))
    with pytest.raises(ValueError):
        latents.latents_for_seeds([float("nan"), 1.0], 8)


@requires_native
def test_the_draw_runs_without_the_interpreter_lock():
    """While a long draw runs on a thread, this thread runs Python and sees its output still unfinished;
    holding the lock, the draw would finish before this thread could look."""
    seeds = np.arange(3_000_000, dtype=np.uint32)  # ~0.4 s on this kind of machine
    out = np.zeros((len(seeds), 8), dtype=np.float32)
    entering = threading.Event()

    def draw() -> None:
        entering.set()
        native_latents._normals.standard_normal(seeds, out, 8)

    thread = threading.Thread(target=draw)
    thread.start()
    entering.wait()
    time.sleep(0.02)  # lets the thread into the call; holding the lock, it would keep it to the end
    unfinished = not out[-1].any()
    thread.join()
    assert unfinished, "the draw finished before this thread could run: it held the interpreter lock"
    np.testing.assert_array_equal(out[-3:], reference(seeds[-3:], 8))

"""Further inference streams for bulk work (``GAN_BULK_INFERENCE_STREAMS``): how many, that bulk batches
really run at once on them, with the same bytes, and what stays on the first stream."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
from service_support import make_settings
from test_service_batcher import SPEC, hold_inference, job, start_batcher

from service.batcher import Lane
from service.config import with_model_hints
from service.runtime import CPU, CUDA, GraphKind, Runtime, inference_streams, interactive_on_loop

OVERLAP_TIMEOUT_S = 30.0  # how long a call waits for a second one: reached only when calls never overlap


@pytest.mark.parametrize(
    ("setting", "threads", "provider", "cores", "expected"),
    [
        (0, 1, CPU, 2, 2),  # this machine's default: one one-thread call per core
        (0, 1, CPU, 16, 16),
        (0, 4, CPU, 16, 4),
        (0, 16, CPU, 16, 1),  # one call fills every core already
        (0, 3, CPU, 2, 1),
        (0, None, CPU, 16, 1),  # a remote backend: not this process's cores
        (0, 1, CUDA, 16, 1),
        (3, 1, CPU, 16, 3),  # the setting wins
        (3, 1, CUDA, 16, 3),
    ],
)
def test_streams_fill_the_cores_with_sessions_of_the_chosen_threads(
    setting, threads, provider, cores, expected
):
    runtime = SimpleNamespace(intra_op_threads=threads, providers=[provider])
    settings = make_settings(bulk_inference_streams=setting)
    assert inference_streams(settings, runtime, cores=cores) == expected


@pytest.mark.parametrize(
    ("setting", "workers", "threads", "provider", "cores", "expected"),
    [
        ("auto", 2, 1, CPU, 2, True),  # this machine's shipped setup: a core per worker
        ("auto", 16, 1, CPU, 16, True),
        ("auto", 3, 1, CPU, 2, True),
        ("auto", 1, 1, CPU, 1, True),
        ("auto", 1, 1, CPU, 2, False),  # one worker on two cores: the loop and the model overlap
        ("auto", 0, 1, CPU, 2, False),  # auto not yet resolved: one worker
        ("auto", 2, 2, CPU, 2, False),  # an intra-op pool
        ("auto", 2, None, CPU, 2, False),  # a remote backend
        ("auto", 2, 1, CUDA, 2, False),
        ("loop", 1, 4, CUDA, 16, True),  # the setting wins
        ("thread", 2, 1, CPU, 2, False),
    ],
)
def test_interactive_batches_run_on_the_loop_where_a_worker_has_at_most_one_core(
    setting, workers, threads, provider, cores, expected
):
    runtime = SimpleNamespace(intra_op_threads=threads, providers=[provider])
    settings = make_settings(interactive_batches=setting, workers=workers)
    assert interactive_on_loop(settings, runtime, cores=cores) is expected


class MeetsAnotherCall(Runtime):
    """Each inference call after warm-up waits until a second one has started: only calls that run at once
    get through."""

    def __init__(self, spec, settings, timeout_s: float):
        super().__init__(spec, settings)
        self.warm = False
        self.barrier = threading.Barrier(2, timeout=timeout_s)
        self.threads: set[str] = set()

    def run(self, kind, z, condition):
        if self.warm:
            self.barrier.wait()
            self.threads.add(threading.current_thread().name)
        return super().run(kind, z, condition)


async def bulk_through(streams: int, timeout_s: float) -> tuple[np.ndarray, np.ndarray, set[str]]:
    settings = make_settings(max_batch=64, bulk_max_batch=64, bulk_inference_streams=streams)
    batcher, runtime = await start_batcher(settings, partial(MeetsAnotherCall, timeout_s=timeout_s))
    try:
        z, labels = job(7, 128, 3)  # two batches of 64
        images = await batcher.generate(GraphKind.MAIN, z, labels, lane=Lane.BULK, admit=False)
    finally:
        runtime.barrier.abort()  # a call left waiting (one stream) is released
        await batcher.close()
    return images, Runtime(SPEC, settings).run(GraphKind.MAIN, z, labels), runtime.threads


def test_two_streams_run_a_bulk_jobs_batches_at_once_with_the_same_bytes():
    images, reference, threads = asyncio.run(bulk_through(2, OVERLAP_TIMEOUT_S))
    np.testing.assert_array_equal(images, reference)
    assert len(threads) == 2


def test_one_stream_runs_them_one_after_another():
    with pytest.raises(threading.BrokenBarrierError):  # the first call waited for a second in vain
        asyncio.run(bulk_through(1, timeout_s=1.0))


def test_interactive_work_and_jobs_that_encode_stay_on_the_first_stream():
    """With the first stream held, a further stream takes bulk rows at once but neither interactive rows nor a
    bulk-lane job that encodes (its encoding must follow all its rows, which only one stream's order
    guarantees)."""

    async def scenario():
        batcher, runtime = await start_batcher(make_settings(max_batch=64, bulk_inference_streams=2))
        assert batcher.streams == 2
        blocker = await hold_inference(batcher, runtime)
        interactive = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(2, 3, 2)))
        encoded = asyncio.create_task(
            batcher.generate(
                GraphKind.MAIN, *job(3, 100, 3), lane=Lane.BULK, encode=lambda images: images.sum()
            )
        )
        await asyncio.sleep(0.05)
        waiting_before_bulk = dict(batcher._waiting)
        bulk = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(4, 64, 4), lane=Lane.BULK))
        while batcher._waiting[Lane.BULK] != 100:
            await asyncio.sleep(0.005)  # the further stream takes the 64 plain bulk rows (held at the gate)
        runtime.gate.set()
        results = await asyncio.gather(blocker, interactive, encoded, bulk)
        await batcher.close()
        return waiting_before_bulk, results, runtime.calls

    waiting, (_, small, encoded_sum, bulk), calls = asyncio.run(scenario())
    assert waiting == {Lane.INTERACTIVE: 3, Lane.BULK: 100}  # the idle further stream took neither
    z, labels = job(3, 100, 3)
    assert encoded_sum == Runtime(SPEC, make_settings()).run(GraphKind.MAIN, z, labels).sum()
    assert small.shape[0] == 3 and bulk.shape[0] == 64
    assert [int(labels[0]) for _, _, labels in calls].count(4) == 1  # the plain bulk job in one batch


def test_a_further_stream_takes_bulk_batches_up_to_bulk_max_batch():
    """With the first stream held, the further stream takes 256 rows of a 300-row bulk job in one batch (fewer
    calls per chunk); the other 44 run as a batch of their own; the bytes are those of one call on the job."""

    async def scenario():
        settings = make_settings(max_batch=64, bulk_max_batch=256, bulk_inference_streams=2)
        batcher, runtime = await start_batcher(settings)
        blocker = await hold_inference(batcher, runtime)
        bulk = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(5, 300, 6), lane=Lane.BULK))
        while batcher._waiting[Lane.BULK] != 300 - 256:
            await asyncio.sleep(0.005)  # the further stream took its batch (held at the gate)
        runtime.gate.set()
        images = await bulk
        await blocker
        await batcher.close()
        return images, [(size, int((labels == 6).sum())) for _, size, labels in runtime.calls]

    images, calls = asyncio.run(scenario())
    assert sorted(call for call in calls if call[1]) == [(44, 44), (256, 256)]  # on the CPU: unpadded
    np.testing.assert_array_equal(images, Runtime(SPEC, make_settings()).run(GraphKind.MAIN, *job(5, 300, 6)))


@pytest.mark.parametrize(
    ("max_batch", "bulk_max_batch", "bulk_batch", "sizes"),
    [(64, 256, 256, (128, 256)), (64, 200, 200, (128, 200)), (64, 64, 64, ()), (256, 64, 256, ())],
)
def test_bulk_batches_are_at_least_max_batch_and_padded_to_doublings(
    max_batch, bulk_max_batch, bulk_batch, sizes
):
    settings = make_settings(max_batch=max_batch, bulk_max_batch=bulk_max_batch)
    assert (settings.bulk_batch, settings.bulk_buckets) == (bulk_batch, sizes)


@pytest.mark.parametrize(
    ("given", "expected"),
    [({}, (16, 16)), ({"bulk_max_batch": 512}, (16, 512)), ({"max_batch": 32}, (32, 32))],
)
def test_a_models_batch_hint_caps_the_bulk_batches_too_unless_set(given, expected):
    """An autoregressive model's max_batch hint (slow at large batches, every size warmed up) applies to the
    bulk streams' batches as well, where the operator set nothing."""
    hinted = with_model_hints(make_settings(**given), 16)
    assert (hinted.max_batch, hinted.bulk_batch) == expected


def test_the_first_stream_takes_bulk_batches_of_bulk_max_batch_once_interactive_work_is_quiet():
    """No interactive request (quiet window 0): both streams take 256 of a 600-row bulk job, leaving 88 (the
    first stream alone at max_batch would have left 280); the bytes are those of one call on the job."""

    async def scenario():
        settings = make_settings(
            max_batch=64, bulk_max_batch=256, bulk_inference_streams=2, bulk_first_stream_quiet_s=0
        )
        batcher, runtime = await start_batcher(settings)
        runtime.gate.clear()
        bulk = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(8, 600, 2), lane=Lane.BULK))
        with contextlib.suppress(
            TimeoutError
        ):  # a first stream at max_batch leaves more: then the assert fails
            async with asyncio.timeout(5):
                while batcher._waiting[Lane.BULK] > 600 - 2 * 256:
                    await asyncio.sleep(0.005)  # each stream took one batch (both held at the gate)
        await asyncio.sleep(0.05)
        waiting = batcher._waiting[Lane.BULK]
        runtime.gate.set()
        images = await bulk
        await batcher.close()
        return waiting, images, sorted(size for _, size, _ in runtime.calls)

    waiting, images, sizes = asyncio.run(scenario())
    assert waiting == 600 - 2 * 256
    assert sizes == [88, 256, 256]  # the 88 left (unpadded on the CPU); at max_batch: 64s
    np.testing.assert_array_equal(images, Runtime(SPEC, make_settings()).run(GraphKind.MAIN, *job(8, 600, 2)))


def test_the_first_stream_keeps_max_batch_while_interactive_work_is_recent_or_waiting():
    async def scenario():
        settings = make_settings(
            max_batch=64, bulk_max_batch=256, bulk_inference_streams=2, bulk_first_stream_quiet_s=60
        )
        batcher, runtime = await start_batcher(settings)
        limits = {"at start-up": batcher._first_stream_limit(GraphKind.MAIN)}
        batcher._interactive_at -= 60  # start-up a minute ago, no interactive request since
        limits["quiet"] = batcher._first_stream_limit(GraphKind.MAIN)
        limits["another graph"] = batcher._first_stream_limit(GraphKind.ENCODER)
        await batcher.generate(GraphKind.MAIN, *job(1, 1, 1))  # an interactive request
        limits["just after an interactive request"] = batcher._first_stream_limit(GraphKind.MAIN)
        batcher._interactive_at -= 60
        runtime.entered.clear()
        blocker = await hold_inference(batcher, runtime)  # holds the first stream, sets the time again
        batcher._interactive_at -= 60
        waiting = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(2, 1, 1)))
        while not batcher._waiting[Lane.INTERACTIVE]:
            await asyncio.sleep(0.005)
        batcher._interactive_at -= 60
        limits["interactive work waiting"] = batcher._first_stream_limit(GraphKind.MAIN)
        runtime.gate.set()
        await asyncio.gather(blocker, waiting)
        await batcher.close()
        return limits

    assert asyncio.run(scenario()) == {
        "at start-up": 64,
        "quiet": 256,
        "another graph": 64,
        "just after an interactive request": 64,
        "interactive work waiting": 64,
    }

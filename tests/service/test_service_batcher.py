"""The batcher on the real runtime, inference held at a gate so that queue states are exact, not timed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_support import MODEL_DIR, GatedRuntime, make_settings
from test_service_ops import metric_value

from contracts import latents
from service import encoding
from service.batcher import Batcher, DeadlineExceeded, Lane, QueueFull, SeededLatents, Unavailable
from service.config import Settings
from service.metrics import Metrics
from service.model_repo import ModelSpec, load_model_dir
from service.runtime import GraphKind, Runtime

SPEC = load_model_dir(MODEL_DIR)


def job(seed: int, n: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    return latents.request_latents(seed, n, SPEC.latent_dim), np.full(n, label, dtype=np.int64)


async def started_batcher(**overrides) -> tuple[Batcher, GatedRuntime]:
    return await start_batcher(make_settings(**overrides))


async def start_batcher(
    settings: Settings, runtime_factory: Callable[[ModelSpec, Settings], Runtime] = GatedRuntime
) -> tuple[Batcher, Any]:
    """A started batcher on ``runtime_factory``'s runtime, once warmed up (then the runtime's ``warm`` is
    set: calls after it are the test's)."""
    runtime = runtime_factory(SPEC, settings)
    batcher = Batcher(runtime, settings, Metrics(settings.max_batch))
    batcher.start()
    while not batcher.ready:
        await asyncio.sleep(0.005)
    runtime.warm = True
    return batcher, runtime


async def hold_inference(batcher: Batcher, runtime: GatedRuntime) -> asyncio.Task:
    """Close the gate and park one job in the inference thread, so everything after it queues."""
    runtime.gate.clear()
    blocker = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(0, 1, 0)))
    while not runtime.entered.is_set():
        await asyncio.sleep(0.005)
    return blocker


def sample(metric, **labels) -> float:
    """The metric's value as a scrape would read it (``_total`` for counters)."""
    [family] = metric.collect()
    name = family.name + ("_total" if family.type == "counter" else "")
    return next(s.value for s in family.samples if s.name == name and s.labels == labels)


@pytest.mark.parametrize(("streams", "bulk_sizes"), [(1, ()), (2, (64, 128))])
def test_warm_up_runs_every_bucket_of_every_graph_before_ready(streams, bulk_sizes):
    """Every bucket of every graph; with bulk-only streams, their larger batch sizes of the main graph too."""

    async def scenario():
        seen: list[tuple[GraphKind, int]] = []

        class Recording(Runtime):
            def run(self, kind, z, condition):
                seen.append((kind, len(z)))
                return super().run(kind, z, condition)

        settings = make_settings(max_batch=32, bulk_max_batch=128, bulk_inference_streams=streams)
        batcher, runtime = await start_batcher(settings, Recording)
        await batcher.close()
        return seen, runtime.graphs

    seen, graphs = asyncio.run(scenario())
    expected = [(kind, size) for kind in graphs for size in (1, 2, 4, 8, 16, 32)]
    assert sorted(seen) == sorted(expected + [(GraphKind.MAIN, size) for size in bulk_sizes])


@pytest.mark.parametrize(("pads", "expected"), [(True, [4, 8]), (False, [3, 5])])
def test_batches_are_padded_to_a_bucket_only_for_a_runtime_that_pads(pads, expected):
    """A GPU session gets its few warmed-up shapes; a CPU session or a remote backend (pads_batches False)
    gets the rows alone: a padded row costs as much as a real one there, or crosses the network."""

    class Recording(GatedRuntime):
        def __init__(self, spec, settings):
            super().__init__(spec, settings)
            self.pads_batches = pads

    async def scenario():
        batcher, runtime = await start_batcher(make_settings(max_batch=32), Recording)
        three = await batcher.generate(GraphKind.MAIN, *job(1, 3, 1))
        five = await batcher.generate(GraphKind.MAIN, *job(2, 5, 2))
        await batcher.close()
        return [size for _, size, _ in runtime.calls], three, five

    sizes, three, five = asyncio.run(scenario())
    assert sizes == expected and len(three) == 3 and len(five) == 5
    reference = Runtime(SPEC, make_settings())
    np.testing.assert_array_equal(five, reference.run(GraphKind.MAIN, *job(2, 5, 2)))


def test_on_the_loop_interactive_batches_run_there_bulk_on_threads_with_the_same_bytes():
    """GAN_INTERACTIVE_BATCHES=loop: requests queued together run as one batch on the event loop's own thread
    (no hand-off), answers encoded there; a bulk job's batches still run on an inference thread; every
    answer is what one call on its own latents gives."""

    class Recording(Runtime):
        def __init__(self, spec, settings):
            super().__init__(spec, settings)
            self.warm = False
            self.calls: list[tuple[int, str]] = []

        def run(self, kind, z, condition):
            if self.warm:
                self.calls.append((len(z), threading.current_thread().name))
            return super().run(kind, z, condition)

    async def scenario():
        settings = make_settings(max_batch=64, interactive_batches="loop", bulk_inference_streams=2)
        batcher, runtime = await start_batcher(settings, Recording)
        assert batcher.on_loop
        seeded = [
            batcher.generate(
                GraphKind.MAIN,
                SeededLatents(40 + i, 1, SPEC.latent_dim),
                np.array([i % 10]),
                encode=encoding.png_response,
            )
            for i in range(10)
        ]
        answers = await asyncio.gather(*seeded)  # all ten queued before the batcher's turn: one batch
        bulk = await batcher.generate(GraphKind.MAIN, *job(3, 100, 4), lane=Lane.BULK)
        await batcher.close()
        return answers, bulk, runtime.calls

    answers, bulk, calls = asyncio.run(scenario())
    loop_thread = threading.current_thread().name  # asyncio.run's loop runs on this thread
    assert calls[0] == (10, loop_thread)
    assert calls[1:] and all(
        name != loop_thread and name.startswith("gan-inference") for _, name in calls[1:]
    )
    reference = Runtime(SPEC, make_settings())
    for i, answer in enumerate(answers):
        z = latents.request_latents(40 + i, 1, SPEC.latent_dim)
        assert answer == encoding.png_response(reference.run(GraphKind.MAIN, z, np.array([i % 10])))
    np.testing.assert_array_equal(bulk, reference.run(GraphKind.MAIN, *job(3, 100, 4)))


def test_a_batch_that_fails_on_the_loop_fails_its_jobs_and_the_next_batch_runs():
    class FailsOnce(Runtime):
        def __init__(self, spec, settings):
            super().__init__(spec, settings)
            self.warm = False
            self.failures = 1

        def run(self, kind, z, condition):
            if self.warm and self.failures:
                self.failures -= 1
                raise RuntimeError("the model failed")
            return super().run(kind, z, condition)

    async def scenario():
        batcher, _ = await start_batcher(make_settings(interactive_batches="loop"), FailsOnce)
        with pytest.raises(RuntimeError, match="the model failed"):
            await batcher.generate(GraphKind.MAIN, *job(1, 2, 3))
        images = await batcher.generate(GraphKind.MAIN, *job(2, 3, 4))
        await batcher.close()
        return images

    images = asyncio.run(scenario())
    np.testing.assert_array_equal(images, Runtime(SPEC, make_settings()).run(GraphKind.MAIN, *job(2, 3, 4)))


def test_a_cpu_session_pads_batches_only_when_pad_sizes_are_set():
    assert Runtime(SPEC, make_settings()).pads_batches is False
    assert Runtime(SPEC, make_settings(batch_buckets=[8, 32])).pads_batches is True


def test_seeded_latents_and_encoding_on_the_inference_thread_give_the_same_bytes():
    """Latents drawn row by row as batches form (a job split across three batches, truncated, beside small
    jobs) and answers encoded on the inference thread equal the route's old path: latents drawn first, images
    encoded after; an encoder that raises fails its own job only."""

    def broken(images: np.ndarray) -> bytes:
        raise ValueError("no encoding")

    async def scenario():
        batcher, runtime = await started_batcher(max_batch=8)
        blocker = await hold_inference(batcher, runtime)
        big = SeededLatents(500, 20, SPEC.latent_dim, 0.7)
        labels = np.arange(20, dtype=np.int64) % SPEC.num_classes
        tasks = [
            asyncio.create_task(batcher.generate(GraphKind.MAIN, big, labels)),
            asyncio.create_task(
                batcher.generate(
                    GraphKind.MAIN,
                    SeededLatents(9, 1, SPEC.latent_dim),
                    np.array([3]),
                    encode=encoding.png_response,
                )
            ),
            asyncio.create_task(
                batcher.generate(GraphKind.MAIN, *job(10, 2, 4), encode=encoding.png_response)
            ),
            asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(11, 1, 5), encode=broken)),
        ]
        runtime.gate.set()
        await blocker
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return results, labels

    (images, one, two, failed), labels = asyncio.run(scenario())
    reference = Runtime(SPEC, make_settings())
    z = latents.request_latents(500, 20, SPEC.latent_dim, 0.7)
    np.testing.assert_array_equal(images, reference.run(GraphKind.MAIN, z, labels))
    assert one == encoding.png_bytes(reference.run(GraphKind.MAIN, *job(9, 1, 3))[0])  # one image: no grid
    assert two == encoding.png_response(reference.run(GraphKind.MAIN, *job(10, 2, 4)))
    assert isinstance(failed, ValueError)


def test_a_batch_of_many_seeded_jobs_draws_each_jobs_own_latents():
    """Enough seeded rows in one batch that their generators are seeded together (contracts.seed_sequence),
    among explicit latents, with each job's own truncation: every job gets the images of its own seeds."""
    truncations = [1.0, 0.5, 0.7]

    async def scenario():
        batcher, runtime = await started_batcher(max_batch=64)
        blocker = await hold_inference(batcher, runtime)
        seeded = [
            asyncio.create_task(
                batcher.generate(
                    GraphKind.MAIN,
                    SeededLatents(1000 + 7 * i, 1 + i % 3, SPEC.latent_dim, truncations[i % 3]),
                    np.full(1 + i % 3, i % SPEC.num_classes),
                )
            )
            for i in range(20)
        ]
        explicit = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(5, 3, 2)))
        await asyncio.sleep(0)
        runtime.gate.set()
        results = await asyncio.gather(blocker, explicit, *seeded)
        await batcher.close()
        return results[1:], runtime.calls

    (explicit, *seeded), calls = asyncio.run(scenario())
    assert calls[1][1] == 42 and len(calls) == 2  # the 42 rows ran as one batch after the blocker
    reference = Runtime(SPEC, make_settings())
    np.testing.assert_array_equal(explicit, reference.run(GraphKind.MAIN, *job(5, 3, 2)))
    for i, images in enumerate(seeded):
        n = 1 + i % 3
        z = latents.request_latents(1000 + 7 * i, n, SPEC.latent_dim, truncations[i % 3])
        expected = reference.run(GraphKind.MAIN, z, np.full(n, i % SPEC.num_classes))
        np.testing.assert_array_equal(images, expected)


def test_large_job_is_split_and_identical_to_one_call():
    async def scenario():
        batcher, runtime = await started_batcher(max_batch=64, bulk_inference_streams=1)  # one call at a time
        z, labels = job(100, 150, 6)
        images = await batcher.generate(GraphKind.MAIN, z, labels)
        await batcher.close()
        return images, runtime, z, labels

    images, runtime, z, labels = asyncio.run(scenario())
    assert [size for _, size, _ in runtime.calls] == [64, 64, 22]  # 150 = 64 + 64 + 22 (the CPU: unpadded)
    np.testing.assert_array_equal(images, Runtime(SPEC, make_settings()).run(GraphKind.MAIN, z, labels))


def test_interactive_work_goes_ahead_of_bulk():
    async def scenario():
        batcher, runtime = await started_batcher(max_batch=64, bulk_inference_streams=1)  # one stream's order
        blocker = await hold_inference(batcher, runtime)
        bulk = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(1, 200, 1), lane=Lane.BULK))
        await asyncio.sleep(0)
        small = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(2, 3, 2)))
        await asyncio.sleep(0)
        runtime.gate.set()
        await asyncio.gather(blocker, bulk, small)
        await batcher.close()
        return runtime.calls

    calls = asyncio.run(scenario())
    _, size, labels = calls[1]  # the batch right after the blocker
    assert size == 64 and list(labels[:3]) == [2, 2, 2] and set(labels[3:].tolist()) == {1}


def test_full_queue_refuses_at_once_and_counts_images_not_requests():
    async def scenario():
        batcher, runtime = await started_batcher(max_queue_images=1024, max_n=1024)
        blocker = await hold_inference(batcher, runtime)
        queued = [asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(10, 512, 3))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.generate(GraphKind.MAIN, *job(20, 1, 3))
        full = sample(batcher.metrics.dropped, reason="queue_full")
        depth = sample(batcher.metrics.queue_depth, lane="interactive") + sample(
            batcher.metrics.queue_depth, lane="bulk"
        )
        runtime.gate.set()
        await asyncio.gather(blocker, *queued)
        await batcher.close()
        return full, depth

    full, depth = asyncio.run(scenario())
    assert full == 1 and depth == 1024


def test_deadline_drops_the_job_from_its_batch():
    async def scenario():
        batcher, runtime = await started_batcher()
        blocker = await hold_inference(batcher, runtime)
        with pytest.raises(DeadlineExceeded):
            await batcher.generate(GraphKind.MAIN, *job(30, 5, 7), timeout_s=0.05)
        runtime.gate.set()
        await blocker
        await batcher.close()
        return runtime.calls, sample(batcher.metrics.dropped, reason="deadline")

    calls, dropped = asyncio.run(scenario())
    assert dropped == 1
    assert all(7 not in labels.tolist() for _, _, labels in calls)


def test_cancelled_caller_drops_its_queued_rows():
    async def scenario():
        batcher, runtime = await started_batcher()
        blocker = await hold_inference(batcher, runtime)
        waiting = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(40, 8, 9)))
        await asyncio.sleep(0)
        depth_before = sample(batcher.metrics.queue_depth, lane="interactive")
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        depth_after = sample(batcher.metrics.queue_depth, lane="interactive")
        runtime.gate.set()
        await blocker
        await batcher.close()
        return runtime.calls, depth_before, depth_after, sample(batcher.metrics.dropped, reason="cancelled")

    calls, before, after, cancelled = asyncio.run(scenario())
    assert (before, after, cancelled) == (8, 0, 1)
    assert all(9 not in labels.tolist() for _, _, labels in calls)


def depth_while_queued() -> list[tuple[float, float]]:
    """(interactive, bulk) queue depth as /metrics renders it: 5 + 100 images queued behind a held batch, the
    5 cancelled, all done. Also run in a subprocess with several workers' metrics (below)."""

    async def scenario():
        settings = make_settings(bulk_inference_streams=1)  # no further stream takes the 100 meanwhile
        batcher, runtime = await start_batcher(settings)

        def depth() -> tuple[float, float]:
            text = batcher.metrics.render().decode()
            lanes = ("interactive", "bulk")
            return tuple(metric_value(text, "gan_queue_depth_images", lane=lane) for lane in lanes)

        blocker = await hold_inference(batcher, runtime)
        small = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(50, 5, 1)))
        large = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(51, 100, 2)))
        await asyncio.sleep(0)
        seen = [depth()]
        small.cancel()
        await asyncio.gather(small, return_exceptions=True)
        seen.append(depth())
        runtime.gate.set()
        await asyncio.gather(blocker, large)
        await batcher.close()
        return [*seen, depth()]

    return asyncio.run(scenario())


DEPTHS = [(5, 100), (0, 100), (0, 0)]


def test_queue_depth_follows_the_queue():
    assert depth_while_queued() == DEPTHS


def test_with_several_workers_queue_depth_is_written_at_every_change(tmp_path):
    """A scrape in one worker cannot call back into another, so in multiprocess mode the batcher writes the
    depth at each change (to this process's file); /metrics must read what the one-process callback reads."""
    script = "import json, test_service_batcher as t; print(json.dumps(t.depth_while_queued()))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [tuple(d) for d in json.loads(result.stdout.splitlines()[-1])] == DEPTHS
    assert list(tmp_path.glob("gauge_livesum_*.db")), "the depth did not go through the multiprocess files"


def test_close_finishes_queued_work_then_refuses():
    async def scenario():
        batcher, runtime = await started_batcher()
        blocker = await hold_inference(batcher, runtime)
        queued = [asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(50 + i, 3, 4))) for i in range(5)]
        await asyncio.sleep(0)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.01)
        runtime.gate.set()
        results = await asyncio.gather(blocker, *queued)
        await closing
        with pytest.raises(Unavailable):
            await batcher.generate(GraphKind.MAIN, *job(60, 1, 4))
        return results

    results = asyncio.run(scenario())
    assert [len(r) for r in results] == [1, 3, 3, 3, 3, 3]


def test_bulk_stream_slots_are_bounded():
    async def scenario():
        batcher, _ = await started_batcher(max_bulk_streams=2)
        first, second = batcher.acquire_stream(), batcher.acquire_stream()
        with pytest.raises(QueueFull, match="GAN_MAX_BULK_STREAMS"):
            batcher.acquire_stream()
        assert sample(batcher.metrics.dropped, reason="streams_full") == 1
        assert sample(batcher.metrics.dropped, reason="queue_full") == 0
        first()
        first()  # releasing twice frees one slot only
        third = batcher.acquire_stream()
        with pytest.raises(QueueFull):
            batcher.acquire_stream()
        second(), third()
        await batcher.close()

    asyncio.run(scenario())


HOUR_MS = 3_600_000.0  # a fill wait no test could sit out: a request that completes was never held for it


async def batcher_with_endless_fill_wait(max_batch: int) -> tuple[Batcher, GatedRuntime]:
    return await start_batcher(make_settings(max_batch=max_batch).model_copy(update={"max_wait_ms": HOUR_MS}))


def test_lone_request_on_an_idle_batcher_runs_without_waiting_for_company():
    async def scenario():
        batcher, runtime = await batcher_with_endless_fill_wait(max_batch=8)
        images = [await batcher.generate(GraphKind.MAIN, *job(60 + i, 1, i)) for i in range(3)]
        await batcher.close()
        return images, runtime.calls

    images, calls = asyncio.run(scenario())
    assert [len(i) for i in images] == [1, 1, 1]
    assert [(size, labels.tolist()) for _, size, labels in calls] == [(1, [0]), (1, [1]), (1, [2])]


def test_requests_arriving_under_load_wait_for_their_batch_to_fill():
    async def scenario():
        batcher, runtime = await batcher_with_endless_fill_wait(max_batch=4)
        blocker = await hold_inference(batcher, runtime)
        first = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(70, 1, 5)))
        await asyncio.sleep(0)
        runtime.gate.set()
        await blocker
        for _ in range(10):  # the inference thread is idle now, but ``first`` came under load: it waits
            await asyncio.sleep(0)
        held = not first.done() and len(runtime.calls) == 1
        second = asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(71, 3, 6)))
        await asyncio.gather(first, second)
        await batcher.close()
        return held, runtime.calls

    held, calls = asyncio.run(scenario())
    assert held
    assert [(size, labels.tolist()) for _, size, labels in calls[1:]] == [(4, [5, 6, 6, 6])]

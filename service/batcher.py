"""Dynamic batching: the hop between the routes and the runtime.

Requests become *jobs* (latents + conditions). Jobs wait in two FIFO lanes, interactive ahead of bulk, bounded
in images. One loop on the event loop assembles batches of at most ``max_batch`` rows (bulk ones: see below);
a job larger than the room left is split across batches. Interactive work goes ahead of bulk, but while bulk
work waits, at least one batch in every ``bulk_min_share`` takes bulk rows first (up to ``max_batch``, the
room left going to interactive work), so a bulk stream progresses by at least ``max_batch`` images every
``bulk_min_share`` batches however busy the interactive lane is. A job that arrives while the inference thread
is idle runs at once; only jobs that arrived while a batch was running (the service is under load) wait, at
most ``max_wait_ms`` after the oldest of them arrived, for their batch to fill. A batch is padded to the next
bucket size where the runtime pads (a GPU session; every bucket is warmed up before the service is ready) and
runs on an inference thread, so the event loop stays free (but see below for interactive batches where a
worker has one core). Batches run one at a time on the first stream; bulk work may also run on further ones
(``GAN_BULK_INFERENCE_STREAMS``, by default one per core a session's threads leave free), several bulk batches
at once, which is how one bulk pull uses a machine whose cores one call cannot fill; their batches hold up to
``GAN_BULK_MAX_BATCH`` rows (fewer hand-offs per bulk chunk; interactive latency is not at stake on them), and
so do the first stream's bulk batches once no interactive request has come for
``GAN_BULK_FIRST_STREAM_QUIET_S`` (an interactive request then waits behind at most one of them). Rows are
sliced back into their jobs' outputs. A row's pixels do not depend on its neighbours (the runtime is
deterministic per row), so batching never changes results.

Where each worker has at most one core to itself (``GAN_INTERACTIVE_BATCHES=auto``, see
``service.runtime.interactive_on_loop``), batches of interactive work only run on the event loop itself: an
inference thread there would only take turns with the loop on that core, at the price of two hand-offs and a
wait for the interpreter lock per batch. The loop then waits while the model runs, and the requests that came
meanwhile are parsed, after one turn of the loop, as the next batch. Bulk work stays on threads.

The per-image work beside the model runs on the inference thread too (or wherever the batch runs), not
between the loop's requests: a job may give
its latents as ``SeededLatents`` (drawn there, every seeded row of a batch at once, as it is assembled) and an
``encode`` function (run there on the job's images once its last rows are out, e.g. PNG encoding), so for a
small request the loop only parses, queues and writes. (reports/bench/NOTES.md: the loop was the bottleneck,
and latents + PNG were a fifth of its work.)

Every single-image request passes through here, so the per-job path stays lean: one future and one deadline
timer per job, Prometheus children looked up once.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from contracts.latents import latents_for_seeds
from service.config import Settings
from service.metrics import Metrics
from service.runtime import GraphKind, Runtime, inference_streams, interactive_on_loop

log = logging.getLogger(__name__)


# gan_jobs_dropped's reason label; streams_full: a bulk stream refused for want of a free slot
DROP_REASONS = ("queue_full", "streams_full", "deadline", "cancelled", "error")


class Lane(StrEnum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


class QueueFull(Exception):
    """No room for the job: the caller should retry later (429)."""


class NeverFits(Exception):
    """The job has more images than the queue holds: no retry can help (the routes refuse it first, 422)."""

    def __init__(self, images: int, queue_images: int):
        super().__init__(f"{images} images, the queue holds at most {queue_images}")
        self.images, self.queue_images = images, queue_images


class Unavailable(Exception):
    """The batcher is not accepting work: shutting down or failed to warm up (503)."""


class DeadlineExceeded(Exception):
    """The job's deadline passed before its images were ready (504)."""


@dataclass(frozen=True, slots=True)
class SeededLatents:
    """The latents of seeds ``seed, seed + 1, ...`` (``n`` of them) times ``truncation``, drawn by the
    inference thread as their rows join a batch: the same values as ``contracts.latents.request_latents``."""

    seed: int
    n: int
    latent_dim: int
    truncation: float = 1.0

    def __len__(self) -> int:
        return self.n

    def seeds(self, start: int, stop: int) -> np.ndarray:
        """The seeds of rows ``start .. stop``."""
        return np.arange(self.seed + start, self.seed + stop, dtype=np.int64)

    def truncate(self, rows: np.ndarray) -> None:
        """Scale drawn rows in place (elementwise in float32, as contracts.latents.truncate)."""
        if self.truncation != 1.0:
            rows *= np.float32(self.truncation)


Encode = Callable[[np.ndarray], Any]


@dataclass(eq=False)
class _Job:
    kind: GraphKind
    z: np.ndarray | SeededLatents
    condition: np.ndarray
    lane: Lane
    admitted: bool  # counts against max_queue_images
    under_load: bool  # a batch was running when the job arrived: it may wait for company
    future: asyncio.Future[Any]
    encode: Encode | None = None  # run on the inference thread on the job's images; its result is the answer
    counted: int | None = None  # images the caller gets (gan_images_generated_total); None: all rows
    enqueued: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # the caller gave up or its deadline passed
    next_row: int = 0  # rows handed to batches so far
    done_rows: int = 0
    started: float | None = None
    compute_s: float = 0.0
    out: np.ndarray | None = None  # written by the inference thread only
    encoded: Any = None  # encode's result, or the exception it raised
    encode_failed: bool = False

    @property
    def n(self) -> int:
        return len(self.z)

    @property
    def waiting_rows(self) -> int:
        return self.n - self.next_row

    @property
    def delivered(self) -> bool:
        return self.done_rows == self.n

    @property
    def finished(self) -> bool:
        return self.future.done()


@dataclass
class _Slice:
    job: _Job
    start: int  # rows [start, stop) of the job ...
    stop: int
    offset: int  # ... sit at rows [offset, offset + stop - start) of the batch


class Batcher:
    def __init__(self, runtime: Runtime, settings: Settings, metrics: Metrics):
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics
        self.buckets = settings.buckets
        self.ready = False
        self.failed: str | None = None
        self._lanes: dict[Lane, deque[_Job]] = {lane: deque() for lane in Lane}
        self._waiting: dict[Lane, int] = dict.fromkeys(Lane, 0)  # rows not yet in a batch
        self._admitted_rows = 0  # waiting rows of admitted jobs
        self._streams = 0
        self._bulk_skipped = 0  # batches taken, while bulk work waited, since the last that put bulk first
        self._in_flight = False  # a batch is in the first inference thread
        self._interactive_at = time.monotonic()  # when the last interactive job arrived (or start-up)
        self._wakeup = asyncio.Event()
        self._bulk_wakeup = asyncio.Event()  # the further streams': set by bulk work only, not every request
        self._closing = False
        self.streams = inference_streams(settings, runtime)
        self.on_loop = interactive_on_loop(settings, runtime)  # interactive-only batches on the event loop
        # the bulk-only streams' batches may be larger (fewer calls per chunk); only they use these sizes
        self._bulk_sizes = settings.bulk_buckets if self.streams > 1 else ()
        self.bulk_batch = settings.bulk_batch if self.streams > 1 else settings.max_batch
        self._sizes = self.buckets + self._bulk_sizes
        self._executor = ThreadPoolExecutor(max_workers=self.streams, thread_name_prefix="gan-inference")
        self._out_lock = threading.Lock()  # two bulk batches may bring a job's first rows at once
        self._task: asyncio.Task[None] | None = None
        if metrics.multiprocess:  # a scrape in another worker cannot call back here: write every change
            self._depth = {lane: metrics.queue_depth.labels(lane.value) for lane in Lane}
            self._count = self._count_and_publish  # type: ignore[method-assign]
        else:
            for lane in Lane:  # read when /metrics is scraped, not set on every queue change
                metrics.queue_depth.labels(lane.value).set_function(lambda lane=lane: self._waiting[lane])
        self._images = {lane: metrics.images.labels(lane.value) for lane in Lane}
        self._queue_wait = {lane: metrics.queue_wait.labels(lane.value) for lane in Lane}
        self._compute = {lane: metrics.compute.labels(lane.value) for lane in Lane}
        self._dropped = {reason: metrics.dropped.labels(reason) for reason in DROP_REASONS}

    # --- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name="gan-batcher")

    async def close(self) -> None:
        """Stop accepting work, finish every queued job, stop the inference thread."""
        self._closing = True
        self._wakeup.set()
        self._bulk_wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def accepting(self) -> bool:
        return not self._closing and self.failed is None

    # --- submitting work

    async def generate(
        self,
        kind: GraphKind,
        z: np.ndarray,
        condition: np.ndarray,
        *,
        lane: Lane | None = None,
        admit: bool = True,
        timeout_s: float | None = None,
        encode: Encode | None = None,
        counted: int | None = None,
    ) -> Any:
        """Images for latents ``z`` [n, latent_dim] (or ``SeededLatents``, drawn on the inference thread)
        under ``condition`` (labels [n] or label weights [n, K]); with ``encode``, ``encode(images)`` run on
        the inference thread (keep it to small jobs: it delays the next batch). ``counted``: how many images
        the job delivers to the caller, for ``gan_images_generated_total`` (default all its rows; fewer for a
        job whose rows are intermediate, such as projection's encoder rows).

        ``admit=False`` skips the queue bound (bulk streams are bounded by their own slots instead).
        Raises ``QueueFull``, ``NeverFits``, ``Unavailable`` or ``DeadlineExceeded``; cancelling the caller
        drops the job.
        """
        if not self.accepting:
            raise Unavailable(self.failed or "shutting down")
        n = len(z)
        lane = lane or (Lane.INTERACTIVE if n <= self.settings.interactive_max_images else Lane.BULK)
        if admit and self._admitted_rows + n > self.settings.max_queue_images:
            if n > self.settings.max_queue_images:
                raise NeverFits(n, self.settings.max_queue_images)
            self._dropped["queue_full"].inc()
            raise QueueFull(f"queue holds {self._admitted_rows} of {self.settings.max_queue_images} images")
        timeout_s = self.settings.request_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = _Job(kind, z, condition, lane, admit, self._in_flight, future, encode, counted=counted)
        self._enqueue(job)
        deadline = loop.call_later(timeout_s, self._time_out, job, timeout_s)
        try:
            return await future
        except asyncio.CancelledError:  # the caller was cancelled (a disconnect): the future with it
            self._abandon(job, "cancelled")
            raise
        finally:
            deadline.cancel()

    def queue_full(self) -> str | None:
        """Why any admitted request would be refused now (``QueueFull``'s message, and the refusal counted),
        or None: lets a request be refused before it is parsed or computes anything (see
        ``service.middleware.QueueDoor``); a request that passes is still checked by ``generate``."""
        if self.accepting and self._admitted_rows >= self.settings.max_queue_images:
            self._dropped["queue_full"].inc()
            return f"queue holds {self._admitted_rows} of {self.settings.max_queue_images} images"
        return None

    def acquire_stream(self) -> Callable[[], None]:
        """Take one of ``max_bulk_streams`` slots for a bulk stream (or raise ``QueueFull``); returns the
        (idempotent) release."""
        if not self.accepting:
            raise Unavailable(self.failed or "shutting down")
        if self._streams >= self.settings.max_bulk_streams:
            self._dropped["streams_full"].inc()
            raise QueueFull(
                f"{self._streams} bulk streams already running in this worker (GAN_MAX_BULK_STREAMS)"
            )
        self._streams += 1
        self.metrics.bulk_streams.set(self._streams)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._streams -= 1
                self.metrics.bulk_streams.set(self._streams)

        return release

    # --- queue bookkeeping

    def _enqueue(self, job: _Job) -> None:
        if job.lane is Lane.INTERACTIVE:
            self._interactive_at = job.enqueued
        self._lanes[job.lane].append(job)
        self._count(job, job.n)
        self._wakeup.set()
        if job.lane is Lane.BULK:
            self._bulk_wakeup.set()

    def _count(self, job: _Job, rows: int) -> None:
        self._waiting[job.lane] += rows
        if job.admitted:
            self._admitted_rows += rows

    def _count_and_publish(self, job: _Job, rows: int) -> None:
        """``_count`` with several workers: the lane's depth goes to this worker's metrics file at once."""
        Batcher._count(self, job, rows)
        self._depth[job.lane].set(self._waiting[job.lane])

    def _time_out(self, job: _Job, timeout_s: float) -> None:
        """The job's deadline passed: its caller gets ``DeadlineExceeded``, its rows leave the queue."""
        if not job.future.done():
            job.future.set_exception(DeadlineExceeded(f"no result within {timeout_s:g} s"))
            self._abandon(job, "deadline")

    def _abandon(self, job: _Job, reason: str) -> None:
        """The caller gave up (disconnect) or its deadline passed: drop the job's rows that have not run yet,
        so they never take a place in a batch (rows already in a running batch are discarded there)."""
        if job.abandoned or job.delivered:
            return
        job.abandoned = True
        job.future.cancel()  # a no-op when the caller's cancellation or the deadline settled it already
        self._dropped[reason].inc()
        if job.waiting_rows:
            with contextlib.suppress(ValueError):
                self._lanes[job.lane].remove(job)
            self._count(job, -job.waiting_rows)
            job.next_row = job.n

    # --- the loop

    async def _main(self) -> None:
        try:
            await self._warm_up()
        except Exception as exc:
            self.failed = f"warm-up failed: {exc}"
            log.exception("warm-up failed; the service stays unready")
            self._fail_all(Unavailable(self.failed))
            return
        self.ready = True
        self.metrics.ready.set(1)
        await asyncio.gather(self._serve(), *(self._serve_bulk() for _ in range(self.streams - 1)))

    async def _warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        for kind in self.runtime.graphs:
            for size in self.buckets + (self._bulk_sizes if kind is GraphKind.MAIN else ()):
                z, condition = self._empty_batch(kind, size)
                await loop.run_in_executor(self._executor, self.runtime.run, kind, z, condition)

    async def _serve(self) -> None:
        max_wait = self.settings.max_wait_ms / 1000
        while True:
            now = time.monotonic()
            waiting = sum(self._waiting.values())
            if waiting == 0:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            oldest = min((lane[0] for lane in self._lanes.values() if lane), key=lambda job: job.enqueued)
            fill_by = oldest.enqueued + max_wait - now
            if oldest.under_load and waiting < self.settings.max_batch and fill_by > 0 and not self._closing:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(fill_by):
                        await self._wakeup.wait()
                continue
            self._in_flight = True
            try:
                await self._run(self._take_batch())
            finally:
                self._in_flight = False

    async def _serve_bulk(self) -> None:
        """A further inference stream: bulk batches only, as long as bulk work waits."""
        while True:
            batch = self._take_bulk_batch()
            if batch:
                await self._run(batch)
                continue
            if self._closing:
                return
            self._bulk_wakeup.clear()
            await self._bulk_wakeup.wait()

    def _take_bulk_batch(self) -> list[_Slice]:
        """Up to ``bulk_batch`` rows (``max_batch`` of a graph other than the main one) of the bulk lane's
        jobs of its first job's kind, FIFO; none of a job that encodes its answer (its encoding waits for its
        last rows, which must then run after the others)."""
        queue = self._lanes[Lane.BULK]
        eligible = [job for job in queue if job.encode is None]
        if not eligible:
            return []
        kind = eligible[0].kind
        return self._fill(queue, [job for job in eligible if job.kind == kind], [], self._bulk_limit(kind))

    def _take_batch(self) -> list[_Slice]:
        """Up to ``max_batch`` rows (see ``_first_stream_limit``) of one graph kind, each lane FIFO:
        interactive jobs first, then bulk; but when bulk work has waited through ``bulk_min_share - 1``
        batches since it last went first, bulk."""
        order = (Lane.INTERACTIVE, Lane.BULK)
        if self._lanes[Lane.BULK]:
            if self._bulk_skipped + 1 >= self.settings.bulk_min_share:
                order, self._bulk_skipped = (Lane.BULK, Lane.INTERACTIVE), 0
            else:
                self._bulk_skipped += 1
        else:
            self._bulk_skipped = 0
        heads = [lane[0] for lane in (self._lanes[order[0]], self._lanes[order[1]]) if lane]
        kind = heads[0].kind
        limit = self._first_stream_limit(kind)
        batch: list[_Slice] = []
        for lane in order:
            queue = self._lanes[lane]
            self._fill(queue, [job for job in queue if job.kind == kind], batch, limit)
        return batch

    def _bulk_limit(self, kind: GraphKind) -> int:
        """Most rows in a bulk batch of ``kind``: only the main graph has the larger, warmed-up sizes."""
        return self.bulk_batch if kind is GraphKind.MAIN else self.settings.max_batch

    def _first_stream_limit(self, kind: GraphKind) -> int:
        """``max_batch``; but the bulk limit when only bulk work waits and no interactive request arrived for
        ``bulk_first_stream_quiet_s``: then the first stream, too, runs the bulk-only streams' batches."""
        if self._lanes[Lane.INTERACTIVE]:
            return self.settings.max_batch
        quiet = time.monotonic() - self._interactive_at >= self.settings.bulk_first_stream_quiet_s
        return self._bulk_limit(kind) if quiet else self.settings.max_batch

    def _fill(
        self, queue: deque[_Job], jobs: list[_Job], batch: list[_Slice], limit: int | None = None
    ) -> list[_Slice]:
        """Slices of ``jobs`` (waiting in ``queue``, in order) appended to ``batch`` up to ``limit`` rows in
        all (``max_batch`` by default); a job whose rows are all taken leaves the queue."""
        limit = limit or self.settings.max_batch
        offset = batch[-1].offset + batch[-1].stop - batch[-1].start if batch else 0
        for job in jobs:
            if offset == limit:
                break
            rows = min(limit - offset, job.waiting_rows)
            batch.append(_Slice(job, job.next_row, job.next_row + rows, offset))
            job.next_row += rows
            offset += rows
            self._count(job, -rows)
            if job.waiting_rows == 0:
                queue.remove(job)
        return batch

    async def _run(self, batch: list[_Slice]) -> None:
        rows = sum(s.stop - s.start for s in batch)
        size = self._sizes[bisect.bisect_left(self._sizes, rows)] if self.runtime.pads_batches else rows
        started = time.monotonic()
        for s in batch:
            if s.job.started is None:
                s.job.started = started
        on_loop = self.on_loop and all(s.job.lane is Lane.INTERACTIVE for s in batch)
        try:
            if on_loop:
                self._infer(size, batch)
            else:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, size, batch)
        except Unavailable as exc:  # a remote backend down or saturated: said once where it changes state
            log.debug("a batch of %d not run: %s", rows, exc)
            for s in batch:
                self._fail(s.job, exc)
        except Exception as exc:
            log.exception("inference failed for a batch of %d", rows)
            for s in batch:
                self._fail(s.job, exc)
        else:
            elapsed = time.monotonic() - started
            self.metrics.batch_size.observe(rows)
            self.metrics.batch_padding.inc(size - rows)
            self.metrics.batch_seconds.observe(elapsed)
            for s in batch:
                self._deliver(s, elapsed)
        if on_loop:  # the loop writes these answers and reads what came meanwhile before the next batch
            await asyncio.sleep(0)

    def _infer(self, size: int, batch: list[_Slice]) -> None:
        """On an inference thread (or the loop): assemble the batch (drawing seeded latents), run it, copy
        each slice into its job's output, and encode every job whose last rows these were. The first stream's
        batches run one after another, and only that stream takes jobs that encode, so a job's earlier rows
        are in its output when its last slice arrives."""
        kind = batch[0].job.kind
        z, condition = self._empty_batch(kind, size)
        seeded = [s for s in batch if isinstance(s.job.z, SeededLatents)]
        if seeded:  # every seeded row of the batch drawn in one go (their generators seeded together)
            seeds = np.concatenate([s.job.z.seeds(s.start, s.stop) for s in seeded])
            drawn = latents_for_seeds(seeds, z.shape[1])
        taken = 0
        for s in batch:
            rows = slice(s.offset, s.offset + s.stop - s.start)
            if isinstance(s.job.z, SeededLatents):
                z[rows] = drawn[taken : taken + s.stop - s.start]
                taken += s.stop - s.start
                s.job.z.truncate(z[rows])
            else:
                z[rows] = s.job.z[s.start : s.stop]
            condition[rows] = s.job.condition[s.start : s.stop]
        images = self.runtime.run(kind, z, condition)
        for s in batch:
            job = s.job
            if job.abandoned:  # the caller gave up or its deadline passed: its rows are discarded
                continue
            if job.out is None:
                with self._out_lock:
                    if job.out is None:
                        job.out = np.empty((job.n, *images.shape[1:]), dtype=images.dtype)
            job.out[s.start : s.stop] = images[s.offset : s.offset + s.stop - s.start]
            if job.encode is not None and s.stop == job.n:
                try:
                    job.encoded = job.encode(job.out)
                except Exception as exc:  # this job's answer fails, not the batch
                    job.encoded, job.encode_failed = exc, True

    def _deliver(self, s: _Slice, elapsed: float) -> None:
        job = s.job
        if job.finished:  # abandoned or expired meanwhile: its rows are discarded
            return
        job.done_rows += s.stop - s.start
        job.compute_s += elapsed
        if job.delivered:
            if job.encode_failed:
                log.error("encoding a job of %d images failed", job.n, exc_info=job.encoded)
                self._fail(job, job.encoded)
                return
            job.future.set_result(job.out if job.encode is None else job.encoded)
            lane = job.lane
            self._images[lane].inc(job.n if job.counted is None else job.counted)
            self._queue_wait[lane].observe((job.started or job.enqueued) - job.enqueued)
            self._compute[lane].observe(job.compute_s)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        if not job.finished:
            job.future.set_exception(exc)
            job.future.exception()
            self._dropped["error"].inc()

    def _fail_all(self, exc: BaseException) -> None:
        for lane in self._lanes.values():
            while lane:
                job = lane.popleft()
                self._count(job, -job.waiting_rows)
                job.next_row = job.n
                self._fail(job, exc)

    def _empty_batch(self, kind: GraphKind, size: int) -> tuple[np.ndarray, np.ndarray]:
        spec = self.runtime.spec
        if kind is GraphKind.ENCODER:  # (images, labels) in, latents out
            return np.zeros((size, *spec.image_shape), dtype=np.uint8), np.zeros(size, dtype=np.int64)
        z = np.zeros((size, spec.latent_dim), dtype=np.float32)
        if kind is GraphKind.LABEL_MORPH:
            condition = np.zeros((size, spec.num_classes), dtype=np.float32)
            condition[:, 0] = 1.0
        else:
            condition = np.zeros(size, dtype=np.int64)
        return z, condition

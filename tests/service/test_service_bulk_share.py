"""Bulk work's guaranteed share of batches (``GAN_BULK_MIN_SHARE``): interactive work goes ahead, but while
bulk work waits at least one batch in every K takes bulk rows first, so a bulk stream finishes under any
interactive load; a bulk stream that fails part-way ends so that its client can tell, and is counted as an
error."""

from __future__ import annotations

import asyncio
import io
import threading
import zipfile

import httpx
import numpy as np
import pytest
from service_support import LIVE_SETTINGS, GatedRuntime, make_settings, serve_in_thread
from test_service_batcher import hold_inference, job, started_batcher
from test_service_ops import metric_value

from service.batcher import Lane
from service.client import GanClient, ServiceError
from service.runtime import GraphKind

INTERACTIVE, BULK = 2, 1  # the labels that tell the lanes' rows apart in a batch
E2E_TIMEOUT_S = 120.0  # generous: reached only when bulk starves
# the lane order is the first inference stream's; further bulk-only streams would take bulk rows beside it
# (tests/service/test_service_batcher.py covers them)
ONE_STREAM = 1


def share_sequence(share: int, interactive_jobs: int, bulk_rows: int) -> list[tuple[int, int]]:
    """With inference held, queue a bulk job and enough full-batch interactive jobs that the interactive lane
    is never empty while bulk rows wait; then let everything run. Per batch after the blocker: (the label of
    its first row, its bulk rows)."""

    async def scenario():
        batcher, runtime = await started_batcher(
            max_batch=64, bulk_min_share=share, bulk_inference_streams=ONE_STREAM
        )
        blocker = await hold_inference(batcher, runtime)
        bulk = asyncio.create_task(
            batcher.generate(GraphKind.MAIN, *job(1, bulk_rows, BULK), lane=Lane.BULK, admit=False)
        )
        interactive = [
            asyncio.create_task(batcher.generate(GraphKind.MAIN, *job(10 + i, 64, INTERACTIVE)))
            for i in range(interactive_jobs)
        ]
        await asyncio.sleep(0)
        runtime.gate.set()
        await asyncio.gather(blocker, bulk, *interactive)
        await batcher.close()
        return runtime.calls[1:]

    calls = asyncio.run(scenario())
    return [(int(labels[0]), int((labels == BULK).sum())) for _, _, labels in calls]


def test_every_kth_batch_takes_bulk_rows_first_while_the_interactive_lane_stays_busy():
    batches = share_sequence(share=4, interactive_jobs=20, bulk_rows=200)
    # 200 bulk rows = 64 + 64 + 64 + 8: batches 4, 8, 12 and 16 (1-based) put bulk first, the others are
    # interactive only; the last bulk batch's room goes to interactive rows (1280 + 200 rows: 24 batches)
    expected = [(INTERACTIVE, 0)] * 3 + [(BULK, 64)]
    expected = expected * 3 + [(INTERACTIVE, 0)] * 3 + [(BULK, 8)] + [(INTERACTIVE, 0)] * 8
    assert batches == expected
    # the rule itself: no window of 4 batches, while bulk rows waited, without a bulk-first batch
    last_bulk = max(i for i, (_, rows) in enumerate(batches) if rows)
    for start in range(0, last_bulk - 3):
        assert any(first == BULK for first, _ in batches[start : start + 4]), start


def test_a_share_of_one_puts_bulk_first_in_every_batch():
    batches = share_sequence(share=1, interactive_jobs=3, bulk_rows=130)
    assert batches[:3] == [(BULK, 64), (BULK, 64), (BULK, 2)]
    assert all(rows == 0 for _, rows in batches[3:])


def test_interactive_work_still_goes_ahead_when_bulk_had_its_share():
    batches = share_sequence(share=8, interactive_jobs=2, bulk_rows=100)
    # two interactive batches first; then bulk alone (nothing else waits)
    assert batches == [(INTERACTIVE, 0), (INTERACTIVE, 0), (BULK, 64), (BULK, 36)]


def test_bulk_chunks_run_at_the_guaranteed_rate_under_endless_interactive_load():
    """Interactive jobs are queued as fast as batches take them (the lane is never empty when a batch is
    taken), yet a bulk job of 4 batches' worth finishes, within the batches the rule allows."""

    async def scenario():
        batcher, runtime = await started_batcher(
            max_batch=64, bulk_min_share=3, bulk_inference_streams=ONE_STREAM
        )
        blocker = await hold_inference(batcher, runtime)
        stop = asyncio.Event()

        async def client(seed: int) -> None:
            while not stop.is_set():
                await batcher.generate(GraphKind.MAIN, *job(seed, 64, INTERACTIVE))

        clients = [asyncio.create_task(client(100 + i)) for i in range(4)]
        await asyncio.sleep(0)
        bulk = asyncio.create_task(
            batcher.generate(GraphKind.MAIN, *job(1, 4 * 64, BULK), lane=Lane.BULK, admit=False)
        )
        await asyncio.sleep(0)
        runtime.gate.set()
        await asyncio.wait_for(bulk, E2E_TIMEOUT_S)
        stop.set()
        await asyncio.gather(blocker, *clients)
        await batcher.close()
        return runtime.calls[1:]

    calls = asyncio.run(scenario())
    bulk_batches = [i for i, (_, _, labels) in enumerate(calls) if labels[0] == BULK]
    assert len(bulk_batches) >= 4
    first_four = bulk_batches[:4]
    assert first_four[-1] < 4 * 3, first_four  # 4 bulk batches within 12 batches (share 3)


def test_bulk_request_completes_while_interactive_clients_keep_the_queue_busy():
    settings = make_settings(**LIVE_SETTINGS, bulk_chunk=64, bulk_min_share=4, request_timeout_s=600)
    with serve_in_thread(settings) as url:
        stop = threading.Event()

        def loop_generate(seed: int) -> None:
            with httpx.Client(base_url=url, timeout=E2E_TIMEOUT_S) as http:
                while not stop.is_set():
                    response = http.post(
                        "/generate", params={"label": 5, "n": 64, "seed": seed, "format": "npy"}
                    )
                    assert response.status_code == 200

        threads = [threading.Thread(target=loop_generate, args=(i,), daemon=True) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            response = httpx.post(url + "/v1/bulk", json={"n": 1024, "seed": 3}, timeout=E2E_TIMEOUT_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=E2E_TIMEOUT_S)
        assert response.status_code == 200
        with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
            assert archive["x"].shape[0] == 1024 and archive["y"].shape == (1024,)


class FailsAfterFirstBatch(GatedRuntime):
    """Inference fails from the second call after warm-up: a bulk stream breaks after its first chunk."""

    def run(self, kind, z, condition):
        if self.warm and len(self.calls) >= 1:
            self.calls.append((kind, len(z), condition.copy()))
            raise RuntimeError("injected inference failure")
        return super().run(kind, z, condition)


def test_a_bulk_stream_that_fails_part_way_is_detectable_and_counted_as_an_error():
    settings = make_settings(**LIVE_SETTINGS, bulk_chunk=64, bulk_prefetch=1)
    runtimes: list[FailsAfterFirstBatch] = []

    def factory(spec, settings):
        runtime = FailsAfterFirstBatch(spec, settings)
        runtimes.append(runtime)
        return runtime

    with serve_in_thread(settings, factory) as url:
        runtimes[0].warm = True
        received = bytearray()
        body = {"n": 512, "seed": 3}
        with (  # no end of the chunked body: the client knows
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("POST", url + "/v1/bulk", json=body, timeout=60) as response,
        ):
            assert response.status_code == 200  # the headers went out with the first chunk
            for block in response.iter_bytes():
                received += block
        assert len(received) < 512 * 28 * 28
        with pytest.raises(zipfile.BadZipFile):  # what arrived is no valid archive
            np.load(io.BytesIO(bytes(received)), allow_pickle=False)
        # a request whose very first chunk fails gets an answer of its own (the status line waits for it)
        with pytest.raises(ServiceError, match="HTTP 500"):
            GanClient(url, retries=0).bulk(512, seed=3)
        metrics = httpx.get(url + "/metrics").text
        assert metric_value(metrics, "gan_http_requests_total", endpoint="/v1/bulk", status="500") == 2
        assert metric_value(metrics, "gan_http_requests_total", endpoint="/v1/bulk", status="200") == 0

"""Against real uvicorn servers: determinism under concurrent mixed traffic, a burst where every request gets
exactly one answer and /metrics agrees, deadlines, disconnects and graceful SIGTERM."""

from __future__ import annotations

import asyncio
import io
import signal
import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest
from service_support import (
    MODEL_DIR,
    free_port,
    make_settings,
    serve_in_thread,
    start_server,
    stop_server,
    wait_ready,
)
from test_service_ops import metric_value

from service.model_repo import load_model_dir

SPEC = load_model_dir(MODEL_DIR)


def npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


def test_batching_never_changes_results(live_server):
    """The same (seed, label, n) gives byte-identical images alone and mixed with other traffic."""
    probes = [
        (seed, seed % SPEC.num_classes, n) for seed, n in [(3, 1), (50, 2), (400, 7), (9000, 33), (77, 130)]
    ]
    with httpx.Client(base_url=live_server, timeout=120) as client:
        alone = {
            p: client.post(
                "/generate", params={"seed": p[0], "label": p[1], "n": p[2], "format": "npy"}
            ).content
            for p in probes
        }

    async def mixed() -> dict[tuple[int, int, int], list[bytes]]:
        async with httpx.AsyncClient(base_url=live_server, timeout=120) as client:

            async def probe(p):
                params = {"seed": p[0], "label": p[1], "n": p[2], "format": "npy"}
                return p, (await client.post("/generate", params=params)).content

            noise = [
                client.post(
                    "/generate", params={"label": i % SPEC.num_classes, "n": 1 + i % 5, "seed": 10_000 + i}
                )
                for i in range(40)
            ]
            noise.append(client.post("/v1/bulk", json={"n": 600, "seed": 1}))
            noise.append(
                client.post(
                    "/v1/interpolate", json={"start": {"seed": 1}, "end": {"seed": 2}, "label": 4, "steps": 9}
                )
            )
            if SPEC.label_morph is not None:  # a second graph, batched separately
                morph = {"seed": 1, "start_label": 0, "end_label": SPEC.num_classes - 1}
                noise.append(client.post("/v1/interpolate/labels", json=morph))
            results = await asyncio.gather(*[probe(p) for p in probes * 3], *noise)
            out: dict[tuple[int, int, int], list[bytes]] = {}
            for result in results[: len(probes) * 3]:
                out.setdefault(result[0], []).append(result[1])
            assert all(r.status_code == 200 for r in results[len(probes) * 3 :])
            return out

    for probe, bodies in asyncio.run(mixed()).items():
        for body in bodies:
            np.testing.assert_array_equal(npy(body), npy(alone[probe]))


async def raw_post(host: str, port: int, target: str) -> tuple[int, dict[str, str]]:
    """One POST on its own connection, by hand: httpx spends ~10 ms of CPU per request, which would dominate
    a 3000-request burst on a small machine. Returns the status and the (lower-cased) headers."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        return await read_answer(reader)
    finally:
        writer.close()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 answer with a Content-Length read off ``reader``: its status and (lower-cased) headers."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if line)
    headers = {k.lower(): v for k, v in headers.items()}
    await reader.readexactly(int(headers["content-length"]))
    return int(head[0].split()[1]), headers


def test_burst_every_request_answered_once_and_metrics_agree(live_server):
    requests = 3000
    url = httpx.URL(live_server)
    sizes = [
        1 + 3 * (i % 4) for i in range(requests)
    ]  # 3000 requests, ~16500 images: more than the queue holds

    async def burst():
        calls = [
            raw_post(url.host, url.port, f"/generate?label={i % SPEC.num_classes}&n={n}&seed={i}")
            for i, n in enumerate(sizes)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    before = httpx.get(live_server + "/metrics").text
    answers = asyncio.run(burst())
    after = httpx.get(live_server + "/metrics").text
    errors = [a for a in answers if isinstance(a, BaseException)]
    assert not errors, f"{len(errors)} requests got no answer, e.g. {errors[0]!r}"
    statuses = Counter(status for status, _ in answers)
    # 503: a connection beyond GAN_MAX_CONNECTIONS, answered at accept (it may or may not happen here)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert all("retry-after" in headers for status, headers in answers if status in (429, 503))
    assert len({headers["x-request-id"] for _, headers in answers}) == requests

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    for status, count in statuses.items():
        if status == 503:  # refused before any request was read: the cap's own counter
            assert delta("gan_connections_refused_total") == count
        else:
            assert delta("gan_http_requests_total", endpoint="/generate", status=str(status)) == count
    served = sum(n for n, (status, _) in zip(sizes, answers, strict=True) if status == 200)
    assert delta("gan_images_generated_total", lane="interactive") == served
    assert delta("gan_jobs_dropped_total", reason="queue_full") == statuses[429]
    assert metric_value(after, "gan_queue_depth_images", lane="interactive") == 0


def test_deadline_is_504_and_expired_work_leaves_its_batch(gated):
    settings = make_settings(request_timeout_s=0.3)
    with serve_in_thread(settings, gated) as url:
        runtime = gated.runtime
        runtime.warm, runtime.gate = True, threading.Event()
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                first = client.post("/generate", params={"label": 1, "seed": 1})
                assert first.status_code == 504 and "deadline" in first.json()["error"]
                second = client.post("/generate", params={"label": 2, "seed": 2, "n": 3})  # queued behind
                assert second.status_code == 504
        finally:
            runtime.gate.set()
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/generate", params={"label": 3, "seed": 3}).status_code == 200
            text = client.get("/metrics").text
    assert all(2 not in labels.tolist() for _, _, labels in runtime.calls)
    assert metric_value(text, "gan_http_requests_total", endpoint="/generate", status="504") == 2
    assert metric_value(text, "gan_jobs_dropped_total", reason="deadline") == 2


# the client gives up after 1 s: watched from 0.1 s (the default), or only after it has already gone
@pytest.mark.parametrize("disconnect_check_ms", [100, 1500])
def test_disconnected_client_work_is_cancelled(gated, disconnect_check_ms):
    with serve_in_thread(make_settings(disconnect_check_ms=disconnect_check_ms), gated) as url:
        runtime = gated.runtime
        runtime.warm, runtime.gate = True, threading.Event()
        blocked: list[httpx.Response] = []
        holder = threading.Thread(
            target=lambda: blocked.append(
                httpx.post(url + "/generate", params={"label": 1, "seed": 1}, timeout=60)
            )
        )
        try:
            holder.start()
            assert runtime.entered.wait(timeout=30)
            with pytest.raises(httpx.ReadTimeout):  # the client gives up while its request is queued
                httpx.post(
                    url + "/generate",
                    params={"label": 2, "seed": 2, "n": 5},
                    timeout=httpx.Timeout(10.0, read=1.0),
                )
            deadline = time.monotonic() + 30
            while (
                metric_value(httpx.get(url + "/metrics").text, "gan_jobs_dropped_total", reason="cancelled")
                < 1
            ):
                assert time.monotonic() < deadline, "the abandoned request was never cancelled"
                time.sleep(0.02)
            text = httpx.get(url + "/metrics").text
            assert metric_value(text, "gan_queue_depth_images", lane="interactive") == 0
        finally:
            runtime.gate.set()
            holder.join(timeout=30)
        text = httpx.get(url + "/metrics").text
    assert blocked[0].status_code == 200
    assert all(2 not in labels.tolist() for _, _, labels in runtime.calls)
    assert metric_value(text, "gan_http_requests_total", endpoint="/generate", status="499") == 1


def test_sigterm_drains_then_exits():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(port, drain_s=2.0)
    try:
        wait_ready(lambda path: httpx.get(url + path))
        results: list[int] = []
        sending = threading.Barrier(4)

        def call():
            sending.wait()
            response = httpx.post(url + "/generate", params={"label": 5, "n": 1024, "seed": 1}, timeout=120)
            results.append(response.status_code)

        workers = [threading.Thread(target=call) for _ in range(3)]
        for worker in workers:
            worker.start()
        sending.wait()
        time.sleep(0.1)  # requests sent now or during the 2 s drain window must all be answered
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(url + "/readyz").status_code != 503:
            assert time.monotonic() < deadline, "readiness never turned 503 after SIGTERM"
            time.sleep(0.02)
        assert httpx.get(url + "/readyz").json()["status"] == "draining"
        assert (
            httpx.post(url + "/generate", params={"label": 1}, timeout=30).status_code == 200
        )  # still serving
        for worker in workers:
            worker.join(timeout=120)
        assert results == [200, 200, 200]
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        stop_server(process)


def test_bulk_streams_are_bounded_and_an_abandoned_stream_frees_its_slot():
    settings = make_settings(max_bulk_streams=1, bulk_chunk=64, max_bulk_n=100_000)
    with serve_in_thread(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/bulk", json={"n": 50_000, "seed": 0}) as first:
            assert first.status_code == 200
            body = first.iter_bytes()  # (kept: dropping the iterator would close the response)
            next(body)  # streaming has begun; the one slot is taken
            second = client.post("/v1/bulk", json={"n": 10})
            assert second.status_code == 429 and "Retry-After" in second.headers
        # leaving the block closed the connection mid-stream: the slot and the queued chunks must be released
        deadline = time.monotonic() + 30
        while True:
            text = client.get("/metrics").text
            if (
                metric_value(text, "gan_bulk_streams") == 0
                and metric_value(text, "gan_queue_depth_images", lane="bulk") == 0
            ):
                break
            assert time.monotonic() < deadline, "the abandoned stream kept its slot or its queued chunks"
            time.sleep(0.02)
        images = metric_value(text, "gan_images_generated_total", lane="bulk")
        assert images < 50_000  # it stopped producing
        assert client.post("/v1/bulk", json={"n": 10, "seed": 1}).status_code == 200

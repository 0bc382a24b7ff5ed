"""Robustness against clients, through real servers and raw sockets: answers nobody received are 499 (and
their queued work is dropped), headers are bounded in size and time, a bulk stream nobody reads is ended and
frees its slot, and API keys are checked before a request's body is read."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.logs import ACCESS_LOGGER
from service.runtime import Runtime
from service.server import ServerConfig, server_options
from tests.service.service_support import (
    GatedRuntime,
    free_port,
    make_settings,
    running_server,
    serve_in_thread,
)
from tests.service.test_service_ops import metric_value

WAIT_S = 60.0  # only ever reached when the behaviour under test is missing


@contextlib.contextmanager
def serve_bounded(settings: Settings, runtime_factory=Runtime) -> Iterator[tuple[str, int]]:
    """The app on uvicorn in a thread, with gan-serve's protocol and limits (``server_options``);
    yields its base URL and port."""
    with serve_in_thread(settings, runtime_factory, ServerConfig, **server_options(settings)) as url:
        yield url, int(url.rsplit(":", 1)[1])


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def metric(url: str, name: str, **labels: str) -> float:
    return metric_value(httpx.get(url + "/metrics").text, name, **labels)


def raw_request(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(WAIT_S)
    sock.sendall(head)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    data = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return bytes(data)


# --- 1. answers nobody received


def test_client_gone_before_its_answer_is_499_and_its_queued_work_is_dropped(caplog):
    # the routes' own disconnect watch never starts here: what is tested is the server telling the request
    settings = make_settings(disconnect_check_ms=60_000, access_log=True)
    runtimes: list[GatedRuntime] = []

    def factory(spec, s):
        runtimes.append(GatedRuntime(spec, s))
        return runtimes[-1]

    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    with serve_bounded(settings, factory) as (url, port):
        runtime = runtimes[0]
        runtime.warm, runtime.gate = True, threading.Event()
        try:
            running = raw_request(port, b"POST /generate?label=3&seed=1 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert runtime.entered.wait(timeout=WAIT_S)  # its batch holds the inference thread
            queued = raw_request(port, b"POST /generate?label=7&seed=2 HTTP/1.1\r\nHost: t\r\n\r\n")
            eventually(lambda: metric(url, "gan_queue_depth_images", lane="interactive") == 1, "never queued")
            running.close()
            queued.close()
            # both counted as 499 while the running batch is still held: neither waits for an answer
            eventually(
                lambda: metric(url, "gan_http_requests_total", endpoint="/generate", status="499") == 2,
                "the requests whose clients left were not counted as 499",
            )
            assert not runtime.gate.is_set()
            assert metric(url, "gan_queue_depth_images", lane="interactive") == 0
        finally:
            runtime.gate.set()
        after = httpx.post(url + "/generate", params={"label": 5, "seed": 3}, timeout=WAIT_S)
        assert after.status_code == 200
        text = httpx.get(url + "/metrics").text
    assert metric_value(text, "gan_http_requests_total", endpoint="/generate", status="200") == 1
    labels_run = [labels.tolist() for _, _, labels in runtime.calls]
    assert all(7 not in labels for labels in labels_run), labels_run  # the queued request never ran
    statuses = [record.fields["status"] for record in caplog.records if record.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert statuses.count(499) == 2 and statuses.count(200) >= 1, statuses


# --- 2. bounded headers: size and time, against gan-serve itself


@pytest.fixture(scope="module")
def gan_serve():
    port = free_port()
    with running_server(port, max_header_bytes=4096, header_timeout_s=1.0, body_timeout_s=1.0) as (url, _):
        yield url, port


def test_headers_over_max_header_bytes_get_431_and_the_connection_closes(gan_serve):
    url, port = gan_serve
    sock = raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for _ in range(256):  # 16 MiB offered; the server stops it after about 4 KiB
            sock.sendall(b"a" * 65536)
    answer = read_to_end(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    fits = httpx.get(url + "/healthz", headers={"X-Big": "a" * 3000})
    assert fits.status_code == 200


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n",  # one header
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-Many: aaaaaaaaaa\r\n" * 300 + b"\r\n",  # many
        b"GET /healthz?" + b"a=1&" * 1500 + b" HTTP/1.1\r\nHost: t\r\n\r\n",  # the request line
    ],
    ids=["one-header", "many-headers", "request-line"],
)
def test_a_whole_head_over_max_header_bytes_in_one_read_gets_431(gan_serve, head):
    # complete within one read, it was parsed before the bytes were counted, and answered 200
    _, port = gan_serve
    sock = raw_request(port, head)
    answer = read_to_end(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_a_body_not_sent_in_time_gets_408_and_the_connection_closes(gan_serve):
    url, port = gan_serve
    body = b'{"labels": [1]}'
    head = b"POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    sock = raw_request(port, head + b"Content-Length: 100\r\n\r\n" + body)  # 85 bytes short, for ever
    answer = read_to_end(sock)  # returns once the server has closed the connection
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"GAN_BODY_TIMEOUT_S" in answer and b"x-request-id" in answer.lower(), answer
    assert metric(url, "gan_http_requests_total", endpoint="/v1/generate", status="408") == 1
    whole = httpx.post(url + "/v1/generate", content=body, headers={"Content-Type": "application/json"})
    assert whole.status_code == 200


def test_headers_not_sent_in_time_get_408_and_the_connections_close(gan_serve):
    url, port = gan_serve
    slow = [raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n") for _ in range(20)]
    silent = [raw_request(port, b"") for _ in range(5)]
    try:
        for sock in slow + silent:
            answer = read_to_end(sock)  # returns once the server has closed the connection
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    finally:
        for sock in slow + silent:
            sock.close()
    assert httpx.get(url + "/healthz").status_code == 200


# --- 3. bulk streams nobody reads


def test_a_bulk_stream_not_read_is_ended_as_incomplete_and_frees_its_slot(caplog):
    settings = make_settings(
        bulk_stall_timeout_s=0.5, max_bulk_streams=1, max_bulk_n=1_000_000, access_log=False
    )
    server_log = logging.getLogger("uvicorn.error")  # configured by uvicorn not to propagate to caplog's
    with serve_bounded(settings) as (url, port):
        server_log.addHandler(caplog.handler)
        body = b'{"n": 500000, "seed": 1}'
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once: the server must wait
        sock.connect(("127.0.0.1", port))
        sock.settimeout(WAIT_S)
        sock.sendall(
            b"POST /v1/bulk HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        try:
            eventually(
                lambda: metric(url, "gan_http_requests_total", endpoint="/v1/bulk", status="408") == 1,
                "the stream nobody read was never ended",
            )
            assert metric(url, "gan_bulk_streams") == 0
            second = httpx.post(url + "/v1/bulk", json={"n": 10, "seed": 2}, timeout=WAIT_S)
            assert second.status_code == 200  # its slot was freed
            assert len(np.load(io.BytesIO(second.content))["x"]) == 10
            received = read_to_end(sock)
        finally:
            sock.close()
            server_log.removeHandler(caplog.handler)
        text = httpx.get(url + "/metrics").text
    assert metric_value(text, "gan_http_requests_total", endpoint="/v1/bulk", status="200") == 1
    head, _, chunked = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
    assert not chunked.endswith(b"0\r\n\r\n")  # no last chunk: any HTTP client sees the body cut short
    # logged once, by the stream, as what it is; not again by the server as an app that left its answer
    assert "without completing response" not in caplog.text
    with pytest.raises(zipfile.BadZipFile):  # and what came is no archive
        np.load(io.BytesIO(dechunk(chunked)))


def dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while (end := data.find(b"\r\n", pos)) != -1:
        size = int(data[pos:end], 16)
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
        if size == 0 or pos > len(data):
            break
    return bytes(out)


# --- 4. API keys before bodies


def test_the_api_key_is_checked_before_the_body_is_read():
    settings = make_settings(api_keys="k1", max_body_bytes=64 << 20, access_log=False)
    with serve_bounded(settings) as (url, port):
        sock = raw_request(
            port,
            b"POST /v1/bulk HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n",  # 50 MiB announced (allowed), not one byte sent
        )
        try:
            answer = read_to_end(sock)  # the 401, then the server closes: it never waits for the body
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert b"x-request-id:" in answer.lower() and b"missing or invalid API key" in answer
        assert metric(url, "gan_http_requests_total", status="401") == 1
        assert httpx.get(url + "/healthz").status_code == 200  # GAN_PUBLIC_OPS
        assert httpx.get(url + "/openapi.json").status_code == 200  # GAN_PUBLIC_DOCS by default
        keyed = httpx.post(url + "/generate", params={"seed": 1, "label": 1}, headers={"X-API-Key": "k1"})
        assert keyed.status_code == 200
        assert httpx.post(url + "/generate", params={"seed": 1, "label": 1}).status_code == 401


def test_docs_follow_public_docs():
    settings = make_settings(api_keys="k1", public_docs=False, access_log=False)
    with serve_bounded(settings) as (url, _):
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert httpx.get(url + path).status_code == 401, path
            assert httpx.get(url + path, headers={"X-API-Key": "k1"}).status_code == 200, path
        assert httpx.get(url + "/healthz").status_code == 200


# --- 5. refusals under overload


def test_a_full_queue_refuses_at_once_without_waiting_for_work_in_front(monkeypatch):
    """The refusal comes back while the running batch is still held, and before any work of its own: its
    latents are never computed (here they would block until the test ends)."""
    import contracts.latents

    computed: list[int] = []
    latent_gate = threading.Event()
    request_latents = contracts.latents.request_latents

    def watched_latents(seed, *args, **kwargs):
        computed.append(seed)
        if seed == 999:  # the request that must be refused: its latent work would wait for the gate
            latent_gate.wait(timeout=WAIT_S)
        return request_latents(seed, *args, **kwargs)

    monkeypatch.setattr(contracts.latents, "request_latents", watched_latents)
    settings = make_settings(max_queue_images=1024, bulk_inference_streams=1)  # the 1,024 stay queued
    runtimes: list[GatedRuntime] = []

    def factory(spec, s):
        runtimes.append(GatedRuntime(spec, s))
        return runtimes[-1]

    with serve_bounded(settings, factory) as (url, _):
        runtime = runtimes[0]
        runtime.warm, runtime.gate = True, threading.Event()
        answers: dict[str, httpx.Response] = {}

        def post(name: str, **params: int) -> threading.Thread:
            thread = threading.Thread(
                target=lambda: answers.__setitem__(
                    name, httpx.post(url + "/generate", params=params, timeout=WAIT_S)
                )
            )
            thread.start()
            return thread

        threads = [post("running", label=1, seed=1)]
        try:
            assert runtime.entered.wait(timeout=WAIT_S)
            threads.append(post("queued", label=2, seed=2, n=1024))  # fills the queue
            eventually(
                lambda: (
                    sum(metric(url, "gan_queue_depth_images", lane=lane) for lane in ("interactive", "bulk"))
                    == 1024
                ),
                "the queue never filled",
            )
            refused = httpx.post(url + "/generate", params={"label": 3, "seed": 999, "n": 8}, timeout=WAIT_S)
            held = not runtime.gate.is_set()
            body = httpx.post(url + "/v1/generate", json={"labels": [4, 5], "seed": 999}, timeout=WAIT_S)
            v2 = httpx.post(url + "/v2/models/mnist-cdcgan/infer", json={"inputs": []}, timeout=WAIT_S)
            text = httpx.get(url + "/metrics").text
        finally:
            runtime.gate.set()
            latent_gate.set()
            for thread in threads:
                thread.join(timeout=WAIT_S)
    assert refused.status_code == 429 and body.status_code == 429, (refused.text, body.text)
    assert v2.status_code == 429 and v2.json()["error"].startswith("server saturated"), v2.text  # not its 400
    assert refused.headers["Retry-After"] == "1" and "X-Request-ID" in refused.headers
    assert refused.json()["error"].startswith("server saturated: queue holds 1024 of 1024 images")
    assert metric_value(text, "gan_http_requests_total", endpoint="/generate", status="429") == 1
    assert metric_value(text, "gan_http_requests_total", endpoint="/v1/generate", status="429") == 1
    assert held  # refused while the batch in front still ran
    assert 999 not in computed  # and before computing anything of its own
    assert answers["running"].status_code == 200 and answers["queued"].status_code == 200


def test_connections_over_max_connections_get_503_at_once_unread_and_a_freed_slot_serves_again():
    """Three connections held open fill GAN_MAX_CONNECTIONS=3: a fourth is answered 503 (Retry-After, JSON,
    request id) before its request is read, and httpx reads that answer whole (no reset); once one held
    connection closes, a new one is served."""
    settings = make_settings(max_connections=3, header_timeout_s=30.0)
    with serve_bounded(settings) as (url, port):
        held = [raw_request(port, b"") for _ in range(3)]
        try:
            with httpx.Client(base_url=url, timeout=WAIT_S) as client:
                eventually(lambda: client.get("/healthz").status_code == 503, "the fourth was never refused")
                refused = client.post("/generate", params={"label": 3, "seed": 1})
            raw = raw_request(port, b"POST /generate?label=3&seed=1 HTTP/1.1\r\nHost: t\r\n\r\n")
            raw_answer = read_to_end(raw)
            raw.close()
        finally:
            held.pop().close()
        try:
            served = httpx.post(url + "/generate", params={"label": 3, "seed": 1}, timeout=WAIT_S)
            refusals = metric(url, "gan_connections_refused_total")
        finally:
            for sock in held:
                sock.close()
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1" and refused.headers["X-Request-ID"]
    assert refused.json()["error"] == (
        "server saturated: it holds its most open connections (3, GAN_MAX_CONNECTIONS); retry after 1 s"
    )
    assert raw_answer.startswith(b"HTTP/1.1 503 ") and b"connection: close" in raw_answer
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert refusals >= 3  # the healthz probe(s), the POST and the raw request; the cap's own counter


def test_max_connections_zero_is_no_cap():
    from service.server import BoundedHttpProtocol, ConnectionLimit

    assert server_options(make_settings(max_connections=0))["http"] is BoundedHttpProtocol
    assert isinstance(server_options(make_settings())["http"], ConnectionLimit)

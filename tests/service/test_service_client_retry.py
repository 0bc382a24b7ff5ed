"""The client against a real server behind a scripted TCP front whose first connections fail (refused, closed
without an answer, 502/503/504/429, a body cut short): it retries with jittered, capped backoff, and a request
without a seed keeps the seed the client chose, so the retry returns the same images. Sleeps are injected."""

from __future__ import annotations

import contextlib
import email.utils
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from service_support import free_port

from service.client import GanClient, ServiceError, retry_after

Action = str | tuple[str, int, str | None] | tuple[str, int]


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class ScriptedFront:
    """A TCP front for ``upstream``: connection i does ``script[i]`` (later ones forward). Actions: "close"
    (read the request, close without answering), ("status", code, retry_after), "forward", and
    ("truncate", n) (forward, but close after n bytes of the answer). Listens only once ``start`` is called:
    until then a connection is refused."""

    def __init__(self, upstream: str, script: list[Action]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.script = list(script)
        self.requests: list[bytes] = []
        self.sock: socket.socket | None = None

    def start(self) -> None:
        if self.sock is None:
            self.sock = socket.create_server(("127.0.0.1", self.port))
            threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def _accept(self) -> None:
        assert self.sock is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            action = self.script.pop(0) if self.script else "forward"
            threading.Thread(target=self._serve, args=(conn, action), daemon=True).start()

    def _serve(self, conn: socket.socket, action: Action) -> None:
        with conn:
            request = read_request(conn)
            self.requests.append(request)
            if action == "close":
                return
            if action[0] == "status":
                _, code, after = action
                extra = f"Retry-After: {after}\r\n" if after is not None else ""
                body = b'{"error": "scripted"}'
                conn.sendall(
                    f"HTTP/1.1 {code} Scripted\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                return
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(request)
                if action == "forward":
                    pipe = threading.Thread(target=_pipe, args=(conn, upstream), daemon=True)
                    pipe.start()
                    _pipe(upstream, conn)
                    return
                _, most = action  # truncate
                sent = 0
                while sent < most and (chunk := upstream.recv(min(65536, most - sent))):
                    conn.sendall(chunk)
                    sent += len(chunk)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def seeds_sent(front: ScriptedFront) -> list[int]:
    found = []
    for request in front.requests:
        head = request.split(b"\r\n\r\n")[0].decode()
        match = re.search(r"[?&]seed=(\d+)", head.splitlines()[0]) or re.search(
            r'"seed":\s*(\d+)', request.decode()
        )
        found.append(int(match.group(1)) if match else -1)
    return found


@pytest.fixture
def direct(live_server) -> Iterator[GanClient]:
    with GanClient(live_server) as client:
        client.wait_ready(timeout=60)
        yield client


FAILURES: list[Action] = [
    "close",
    ("status", 503, "2"),
    ("status", 502, None),
    ("status", 504, None),
    ("status", 429, "3600"),  # honoured only up to max_retry_after
]


def fetch_through_failures(upstream: str, seed: int) -> tuple[np.ndarray, int | None, list[float], list[int]]:
    front = ScriptedFront(upstream, FAILURES)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        front.start()  # the first attempt found nothing listening: connection refused

    client = GanClient(
        front.url,
        retries=6,
        backoff=0.1,
        max_backoff=0.3,
        max_retry_after=5,
        rng=random.Random(seed),
        sleep=sleep,
    )
    try:
        with client:
            result = client.generate(3, n=4)  # no seed: the client chooses one before the first attempt
    finally:
        front.close()
    return result.array(), result.seed, sleeps, seeds_sent(front)


def test_client_retries_connection_errors_and_5xx_with_the_same_seed(live_server, direct):
    images, seed, sleeps, seeds = fetch_through_failures(live_server, seed=7)
    assert seed is not None and seeds == [seed] * 6  # every attempt that reached the front asked for it
    np.testing.assert_array_equal(images, direct.generate(3, n=4, seed=seed).array())
    assert len(sleeps) == 6  # refused, closed, 503, 502, 504, 429; the 7th attempt got through
    floors = [0, 0, 2, 0, 0, 5]  # Retry-After: 2 honoured; 3600 capped at max_retry_after
    for attempt, (slept, floor) in enumerate(zip(sleeps, floors, strict=True)):
        backoff = min(0.3, 0.1 * 2**attempt)  # doubling, at most max_backoff, jittered to [0.5, 1] of it
        assert floor + backoff / 2 <= slept <= floor + backoff, (attempt, slept)
    again = fetch_through_failures(live_server, seed=7)  # deterministic: the same rng, the same waits
    assert (again[1], again[2]) == (seed, sleeps)


def test_client_bulk_retries_a_stream_cut_short(live_server, direct):
    front = ScriptedFront(live_server, [("truncate", 3000), "forward"])  # the .npz breaks off mid-stream
    front.start()
    sleeps: list[float] = []
    try:
        with GanClient(front.url, sleep=sleeps.append) as client:
            x, y = client.bulk(64)
    finally:
        front.close()
    assert len(sleeps) == 1
    [first, second] = seeds_sent(front)
    assert first == second >= 0  # the client's seed, sent both times
    want_x, want_y = direct.bulk(64, seed=first)
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)


def test_client_gives_up_after_its_retries(live_server):
    front = ScriptedFront(live_server, [("status", 502, None)] * 3)
    front.start()
    sleeps: list[float] = []
    try:
        with (
            GanClient(front.url, retries=2, sleep=sleeps.append) as client,
            pytest.raises(ServiceError) as caught,
        ):
            client.models()
    finally:
        front.close()
    assert caught.value.status == 502 and len(sleeps) == 2
    nobody = f"http://127.0.0.1:{free_port()}"
    with GanClient(nobody, retries=1, sleep=sleeps.append) as client, pytest.raises(httpx.ConnectError):
        client.models()


def test_client_does_not_retry_client_errors(direct):
    sleeps: list[float] = []
    direct._sleep = sleeps.append
    with pytest.raises(ServiceError) as caught:
        direct.generate(99)
    assert caught.value.status == 422 and sleeps == []


def test_retry_after_reads_seconds_and_http_dates():
    def response(value: str | None) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value} if value is not None else {})

    assert retry_after(response("3")) == 3.0
    assert retry_after(response(None)) is None and retry_after(response("soon")) is None
    assert retry_after(response("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past
    assert 50 < retry_after(response(email.utils.formatdate(time.time() + 60, usegmt=True))) <= 60


def test_iterable_dataset_retries_failed_batches(live_server):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from service.dataset import SyntheticBatches

    front = ScriptedFront(live_server, ["close", ("status", 502, None), ("status", 503, "0")])
    front.start()
    try:
        flaky = SyntheticBatches(front.url, batch_size=8, num_batches=2, seed=3, prefetch=1, backoff=0.01)
        got = list(DataLoader(flaky, batch_size=None))
    finally:
        front.close()
    want = list(
        DataLoader(SyntheticBatches(live_server, batch_size=8, num_batches=2, seed=3), batch_size=None)
    )
    for (x, y), (x2, y2) in zip(got, want, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)

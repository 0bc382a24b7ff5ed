"""The burst benchmark's bookkeeping, on a tiny burst against a stub server whose answers are known: request
i has seed i, the stub refuses the odd seeds (429) and serves the even ones, and counts them in a /metrics of
its own. Only counts are checked, never timing."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from loadtest import burst
from loadtest.probe import Probe

REQUESTS = 21  # seeds 0..20: 11 even (200), 10 odd (429)
SAMPLE = "gan_http_requests_total"


async def serve_stub(counts: Counter[int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].decode().split(" ")[1]
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if target == "/metrics":
                    status, body = (
                        200,
                        "".join(
                            f'{SAMPLE}{{endpoint="/generate",method="POST",status="{code}"}} {n}\n'
                            for code, n in counts.items()
                        ).encode(),
                    )
                elif not target.startswith("/generate"):  # /readyz
                    status, body = 200, b"{}"
                else:
                    seed = int(parse_qs(urlsplit(target).query)["seed"][0])
                    status, body = (200, b"\x89PNG") if seed % 2 == 0 else (429, b'{"error": "full"}')
                    counts[status] += 1
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
                await writer.drain()
                if b"connection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_a_tiny_burst_counts_refusals_and_answers_apart() -> None:
    async def scenario() -> burst.Burst:
        counts: Counter[int] = Counter()
        stub = await serve_stub(counts)
        port = stub.sockets[0].getsockname()[1]
        async with stub:
            return await burst.measure(f"http://127.0.0.1:{port}", REQUESTS, 1)

    result = asyncio.run(scenario())
    assert result.counts() == {"200": 11, "429": 10}
    assert result.server_counts == {"200": 11.0, "429": 10.0}
    assert len(result.from_start_s["429"]) == 10 and not result.failures
    summary = result.summary()
    assert set(summary["from_send_ms"]) == {"200", "429"}
    assert summary["from_send_ms"]["429"]["p50"] is not None


def test_a_probe_in_its_own_process_times_a_fresh_client() -> None:
    """Against a server on a thread of its own: leaving the probe waits for its last request, which a stub
    on this test's event loop could not answer meanwhile."""
    heard = threading.Semaphore(0)

    class Answer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            heard.release()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Probe(f"http://127.0.0.1:{server.server_port}", "/generate?seed=0", interval_s=0.005) as probe:
            probe.begin()
            for _ in range(3):  # the probe has been heard a few times
                assert heard.acquire(timeout=60)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    assert set(probe.results) == {"200"} and len(probe.results["200"]) >= 3
    assert all(seconds > 0 for seconds in probe.results["200"])


def test_the_probe_counts_a_refused_connection_as_failed() -> None:
    from loadtest.probe import FAILED, one_request

    assert one_request("127.0.0.1", 9, "/generate")[0] == FAILED  # the discard port: nobody listens


def test_a_request_without_an_answer_is_counted_as_failed() -> None:
    result = asyncio.run(burst.fire("http://127.0.0.1:9", 3, 1))  # the discard port: nobody listens
    assert result.counts() == {burst.FAILED: 3}
    assert sum(result.failures.values()) == 3


def test_the_command_writes_its_reports(tmp_path: Path) -> None:
    async def scenario() -> None:
        stub = await serve_stub(Counter())
        port = stub.sockets[0].getsockname()[1]
        async with stub:
            argv = ["--host", f"http://127.0.0.1:{port}", "--requests", "4", "--out", str(tmp_path)]
            code = await asyncio.to_thread(burst.main, argv)
            assert code == 0

    asyncio.run(scenario())
    report = json.loads((tmp_path / "burst.json").read_text())
    assert report["counts"] == {"200": 2, "429": 2} and report["server_counts"] == {"200": 2.0, "429": 2.0}
    assert "| 429 | 2 | 2 |" in (tmp_path / "burst.md").read_text()


def test_the_servers_own_durations_come_from_its_access_log() -> None:
    lines = [
        '{"level": "INFO", "endpoint": "/generate", "status": 429, "duration_ms": 1.5}',
        '{"level": "INFO", "endpoint": "/generate", "status": 200, "duration_ms": 30.0}',
        '{"level": "INFO", "endpoint": "/readyz", "status": 200, "duration_ms": 0.1}',
        "INFO: not JSON",
        '{"truncated": ',
    ]
    assert burst.server_durations(lines) == {"429": [0.0015], "200": [0.03]}

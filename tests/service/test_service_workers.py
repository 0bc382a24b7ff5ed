"""`gan-serve` with two workers: each listens on a socket of its own, so a burst of new connections is spread
over both; one scrape of /metrics counts the work of both, a worker that dies keeps its counters but not its
live gauges, and the private metrics directory is gone once the server stops."""

from __future__ import annotations

import asyncio
import http.client
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from service_support import READY_TIMEOUT_S, REPO_ROOT, free_port, start_server, stop_server, wait_ready
from test_service_live import raw_post, read_answer
from test_service_ops import metric_value

from service.metrics import workers_ready
from service.runtime import available_cores
from service.workers import REUSE_PORT_AVAILABLE, listening_sockets

needs_reuse_port = pytest.mark.skipif(not REUSE_PORT_AVAILABLE, reason="no SO_REUSEPORT on this system")
BURST = 64  # connections opened at once, as a load generator's clients or a client pool open them
# each worker's share of the burst, at least: the kernel hashes connections over the sockets, binomially
# (64 over two: 32 +- 4; fewer than 12 in one is 5 sigma off); one shared socket often gave one worker all
FAIR_SHARE = 12

ROUND = 8  # concurrent requests (each on its own connection, so the kernel spreads them over the workers)
MAX_ROUNDS = 50
IMAGES_PER_REQUEST = 3
SETTLE_S = 10.0  # a worker counts a request just after its answer is sent: a scrape may briefly lag behind
# the supervisor notices a dead worker on its next health round, which pings the live ones first, each given
# up to GAN_WORKER_HEALTHCHECK_S (30) to answer: on a loaded machine that round can take a while
DEPARTED_S = 30.0 + SETTLE_S


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def worker_files(metrics_dir: Path, kind: str) -> dict[int, Path]:
    """pid -> that worker's file of one kind (``counter``, ``gauge_livesum``, ``gauge_livemin`` ...)."""
    return {int(path.stem.rsplit("_", 1)[1]): path for path in metrics_dir.glob(f"{kind}_*.db")}


def generate_requests(counter_file: Path) -> float:
    """/generate requests one worker has counted, read from its own file."""
    families = MultiProcessCollector.merge([str(counter_file)])
    return sum(
        sample.value
        for family in families
        if family.name == "gan_http_requests"
        for sample in family.samples
        if sample.labels.get("endpoint") == "/generate"
    )


def test_two_workers_share_one_metrics_view(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where gan-serve makes its private metrics directory
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(port, workers=2, drain_s=0, max_batch=8)
    try:
        eventually(lambda: len(list(tmp_path.glob("gan-serve-metrics-*"))) == 1, READY_TIMEOUT_S, "no dir")
        [metrics_dir] = tmp_path.glob("gan-serve-metrics-*")
        assert metrics_dir.stat().st_mode & 0o077 == 0  # private to the server's user

        def scrape() -> str:
            try:
                return httpx.get(url + "/metrics").text
            except httpx.TransportError:
                return ""

        def both_ready() -> bool:  # gan_ready is the least over live workers: 1 once both are warm
            started = len(worker_files(metrics_dir, "gauge_livemin")) == 2
            return started and metric_value(scrape(), "gan_ready") == 1

        eventually(both_ready, READY_TIMEOUT_S, "two warm workers")
        for _ in range(ROUND):  # whichever worker answers: the server's readiness
            ready = httpx.get(url + "/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"

        async def burst(first: int) -> list[tuple[int, dict[str, str]]]:
            seeds = range(first, first + ROUND)
            targets = [f"/generate?label={i % 10}&n={IMAGES_PER_REQUEST}&seed={i}" for i in seeds]
            return await asyncio.gather(*(raw_post("127.0.0.1", port, target) for target in targets))

        sent = 0
        for _ in range(MAX_ROUNDS):  # until both workers have answered some
            assert all(status == 200 for status, _ in asyncio.run(burst(sent)))
            sent += ROUND
            counters = worker_files(metrics_dir, "counter")
            if sum(generate_requests(path) > 0 for path in counters.values()) == 2:
                break
        per_worker = {pid: generate_requests(path) for pid, path in counters.items()}
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker

        def counted(text: str) -> float:
            return metric_value(text, "gan_http_requests_total", endpoint="/generate", status="200")

        eventually(lambda: counted(scrape()) == sent, SETTLE_S, f"one scrape counts all {sent} requests")
        text = scrape()
        assert counted(text) == sent
        images = metric_value(text, "gan_images_generated_total", lane="interactive")
        assert images == sent * IMAGES_PER_REQUEST
        assert metric_value(text, "gan_http_request_duration_seconds_count", endpoint="/generate") == sent
        for lane in ("interactive", "bulk"):  # livesum: one series per lane, no pid label
            assert f'gan_queue_depth_images{{lane="{lane}"}} 0.0' in text
        assert "pid=" not in text
        assert metric_value(text, "gan_ready") == 1

        # a worker killed outright: the supervisor marks it dead (live gauges gone), its counters still count
        victim = min(per_worker)
        os.kill(victim, signal.SIGKILL)
        eventually(
            lambda: (
                victim not in worker_files(metrics_dir, "gauge_livesum")
                and victim not in worker_files(metrics_dir, "gauge_livemin")
            ),
            DEPARTED_S,
            "the dead worker's live gauges were never removed",
        )
        assert victim in worker_files(metrics_dir, "counter")
        assert counted(scrape()) == sent
    finally:
        stop_server(process)
    assert process.returncode == 0
    assert not list(tmp_path.glob("gan-serve-metrics-*")), "the metrics directory outlived the server"


def test_readiness_counts_the_workers_whose_files_say_ready(tmp_path):
    """/readyz with several workers is 200 only when every worker's gan_ready is 1: counted from each worker's
    own file, as three processes (two ready, one warming up) leave them."""
    script = "import sys; from service.metrics import Metrics; Metrics(8).ready.set(int(sys.argv[1]))"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for value in (1, 0, 1):
        subprocess.run(
            [sys.executable, "-c", script, str(value)], env=env, cwd=REPO_ROOT, check=True, timeout=60
        )
    assert len(worker_files(tmp_path, "gauge_livemin")) == 3
    assert workers_ready(str(tmp_path)) == 2
    assert workers_ready(str(tmp_path / "nothing-here")) == 0


def test_a_ready_worker_answers_not_ready_while_another_warms_up(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from service.routes.ops import readiness

    script = "import sys; from service.metrics import Metrics; Metrics(8).ready.set(int(sys.argv[1]))"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for value in (1, 0):  # this worker (warm) and another still warming up
        subprocess.run(
            [sys.executable, "-c", script, str(value)], env=env, cwd=REPO_ROOT, check=True, timeout=60
        )
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    warm = SimpleNamespace(ready=True, failed=None, runtime=SimpleNamespace(unavailable=None))
    ctx = SimpleNamespace(
        lifecycle=SimpleNamespace(batcher=warm, draining=False),
        settings=SimpleNamespace(workers=2),
        metrics=SimpleNamespace(multiprocess=True),
    )
    assert readiness(ctx) == (False, "warming up: 1 of 2 workers ready")
    subprocess.run([sys.executable, "-c", script, "1"], env=env, cwd=REPO_ROOT, check=True, timeout=60)
    ctx.settings.workers = 3  # a third worker, warm: two of three ready, still not the server
    assert readiness(ctx) == (False, "warming up: 2 of 3 workers ready")
    ctx.settings.workers = 2  # as many ready as GAN_WORKERS: ready
    assert readiness(ctx) == (True, "ready")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")


def accept_all(sockets: list[socket.socket], expected: int) -> list[int]:
    """Connections accepted by each listening socket until ``expected`` are in."""
    counts = [0] * len(sockets)
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(sockets):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        deadline = time.monotonic() + 30
        while sum(counts) < expected and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                connection, _ = key.fileobj.accept()  # type: ignore[union-attr]
                connection.close()
                counts[key.data] += 1
    return counts


@needs_reuse_port
def test_listening_sockets_spread_a_burst_of_connections_over_every_socket():
    sockets = listening_sockets("127.0.0.1", 0, 2)
    clients: list[socket.socket] = []
    try:
        port = sockets[0].getsockname()[1]
        assert port != 0 and all(sock.getsockname()[1] == port for sock in sockets)
        for sock in sockets:
            sock.listen(BURST)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
        counts = accept_all(sockets, BURST)
        assert sum(counts) == BURST and min(counts) >= FAIR_SHARE, counts
    finally:
        for sock in sockets + clients:
            sock.close()


@needs_reuse_port
@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuse_port"])
def test_a_port_another_server_listens_on_is_refused_not_shared(reuse_port):
    """Sockets with SO_REUSEPORT would share a port with any other such socket of the same user (another
    gan-serve): the port is taken once without it first, so the second server fails as uvicorn's would."""
    other = socket.socket()
    try:
        if reuse_port:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", other.getsockname()[1], 2)
    finally:
        other.close()
    with pytest.raises(ValueError, match="at least one"):
        listening_sockets("127.0.0.1", 0, 0)


def listeners(pid: int, port: int) -> dict[int, tuple[int, int]]:
    """pid -> (listening sockets, established connections) on ``port``, for ``pid`` and its children."""
    psutil = pytest.importorskip("psutil")  # the loadtest extra's, not the service's
    found = {}
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            sockets = [c for c in process.net_connections("tcp") if c.laddr and c.laddr.port == port]
        except psutil.NoSuchProcess:
            continue
        listening = sum(c.status == psutil.CONN_LISTEN for c in sockets)
        if listening:
            found[process.pid] = (listening, sum(c.status == psutil.CONN_ESTABLISHED for c in sockets))
    return found


def worker_connections(server: int, port: int) -> dict[int, int]:
    """Established connections of each worker (each listening on the port: the supervisor holds them all)."""
    return {pid: established for pid, (_, established) in listeners(server, port).items() if pid != server}


async def open_burst(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` keep-alive connections opened at once, each answered once (so its worker has accepted it)."""

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        status, headers = await read_answer(reader)
        assert status == 200, headers
        return writer

    return await asyncio.gather(*(one() for _ in range(count)))


@needs_reuse_port
def test_each_worker_takes_its_share_of_a_burst_of_connections_and_keeps_its_socket(tmp_path, monkeypatch):
    """Two workers, each on its own socket: 64 connections opened at once are spread over both. SIGTTIN
    starts a third worker on a socket of its own, SIGTTOU retires it and closes that socket, SIGHUP replaces
    both workers on their sockets."""
    psutil = pytest.importorskip("psutil")  # the loadtest extra's, not the service's
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    port = free_port()
    process = start_server(port, workers=2, drain_s=0, max_batch=8)

    url = f"http://127.0.0.1:{port}"

    def workers_listening(count: int) -> Callable[[], bool]:
        def check() -> bool:
            found = listeners(process.pid, port)
            ours = found.get(process.pid, (0, 0))[0]  # the supervisor holds one socket per worker
            others = [pid for pid in found if pid != process.pid]
            return ours == count and len(others) == count and all(found[pid][0] == 1 for pid in others)

        return check

    async def burst_spread() -> dict[int, int]:
        writers = await open_burst(port, BURST)
        try:
            return worker_connections(process.pid, port)
        finally:
            for writer in writers:
                writer.close()

    try:
        wait_ready(lambda path: httpx.get(url + path))
        eventually(
            workers_listening(2), READY_TIMEOUT_S, "two workers, each listening on a socket of its own"
        )
        spread = asyncio.run(burst_spread())
        assert len(spread) == 2 and min(spread.values()) >= FAIR_SHARE, spread
        # GAN_INTERACTIVE_BATCHES=auto: on the event loop where each worker has at most one core
        [card] = httpx.get(url + "/v1/models").json()
        assert card["interactive_batches"] == ("loop" if available_cores() <= 2 else "thread")

        process.send_signal(signal.SIGTTIN)
        eventually(workers_listening(3), READY_TIMEOUT_S, "a third worker on a third socket")
        third = max(worker_connections(process.pid, port), key=lambda pid: psutil.Process(pid).create_time())
        wait_ready(lambda path: httpx.get(url + path))
        process.send_signal(signal.SIGTTOU)
        eventually(workers_listening(2), READY_TIMEOUT_S, "the third worker and its socket gone")
        assert third not in worker_connections(process.pid, port)

        before = set(worker_connections(process.pid, port))
        process.send_signal(signal.SIGHUP)
        eventually(
            lambda: workers_listening(2)() and not before & set(worker_connections(process.pid, port)),
            2 * READY_TIMEOUT_S,
            "both workers replaced, on their sockets",
        )
        wait_ready(lambda path: httpx.get(url + path))
        spread = asyncio.run(burst_spread())
        assert len(spread) == 2 and min(spread.values()) >= FAIR_SHARE, spread
    finally:
        stop_server(process)
    assert process.returncode == 0


HEALTHCHECK_S = 3  # the supervisor's wait for an answer (GAN_WORKER_HEALTHCHECK_S; 30 by default)
# the supervisor pings worker by worker, each given up to HEALTHCHECK_S: the stuck one is found within a round
REPLACED_S = 2 * HEALTHCHECK_S + READY_TIMEOUT_S


def supervise_stand_in_workers(port: int, workers: int) -> subprocess.Popen:
    """``service.workers.Supervisor`` over ``workers`` workers of stuck_loop_app, as gan-serve starts it, in a
    session of its own (a stuck worker outlives a failed test otherwise)."""
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from uvicorn.config import Config
from service.workers import REUSE_PORT_AVAILABLE, Supervisor, bind_sockets, shared_metrics_dir
config = Config("stuck_loop_app:app", host="127.0.0.1", port={port}, workers={workers},
                timeout_worker_healthcheck={HEALTHCHECK_S}, log_level="warning")
with shared_metrics_dir() as metrics_dir:
    Supervisor(config, bind_sockets(config, {workers}, REUSE_PORT_AVAILABLE), metrics_dir=metrics_dir).run()
"""
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, start_new_session=True)


def answering_pids(port: int, connections: int) -> set[int]:
    """The workers that answered ``GET /pid`` on ``connections`` new connections (spread by the kernel)."""
    pids = set()
    for _ in range(connections):
        with httpx.Client(timeout=READY_TIMEOUT_S) as client:
            pids.add(int(client.get(f"http://127.0.0.1:{port}/pid").text))
    return pids


def test_a_worker_whose_event_loop_is_stuck_is_replaced_on_its_socket():
    """A handler that never returns blocks one worker's event loop while its process (and uvicorn's own
    health-check thread) lives on: the supervisor's check goes through the loop, so that worker is killed
    and a new one serves its socket; every new connection is answered again, by two workers."""
    port = free_port()
    process = supervise_stand_in_workers(port, workers=2)
    try:
        eventually(lambda: _answers(port), READY_TIMEOUT_S, "the stand-in workers answer")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=READY_TIMEOUT_S)
        connection.request("GET", "/pid")
        stuck = int(connection.getresponse().read())
        connection.request("POST", "/block")  # this worker's loop sleeps from here on
        eventually(lambda: not _alive(stuck), REPLACED_S, f"worker {stuck}, stuck, replaced")
        connection.close()

        def two_others_answer() -> bool:
            pids = answering_pids(port, connections=16)
            assert stuck not in pids
            return len(pids) == 2

        eventually(two_others_answer, READY_TIMEOUT_S, "two workers answer again")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/pid", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_after_the_drain_new_connections_are_refused_not_left_unanswered(tmp_path, monkeypatch):
    """SIGTERM: each worker drains, then stops listening while a long answer (a bulk stream read slowly)
    keeps one of them running. From then on a new connection must be refused, as a closed port refuses it:
    while the supervisor held copies of the sockets, the kernel accepted it into a socket no worker read any
    more, and it waited unanswered until the supervisor exited."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    port = free_port()
    process = start_server(port, workers=2, drain_s=0.5, bulk_stall_timeout_s=120, max_bulk_n=1_000_000)
    url = f"http://127.0.0.1:{port}"
    stream = socket.socket()
    try:
        wait_ready(lambda path: httpx.get(url + path))
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once: the answer waits
        stream.connect(("127.0.0.1", port))
        body = b'{"n": 1000000, "seed": 1}'
        stream.sendall(
            b"POST /v1/bulk HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert stream.recv(64).startswith(b"HTTP/1.1 200 ")  # streaming, and kept waiting from here on
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5 + SETTLE_S / 4)  # past the drain: the workers have stopped listening
        assert process.poll() is None  # the stream's worker still runs, and so does the supervisor
        for _ in range(16):  # over both workers' sockets (the kernel hashes each new connection)
            try:
                probe = socket.create_connection(("127.0.0.1", port), timeout=READY_TIMEOUT_S)
            except ConnectionRefusedError:
                continue
            with probe:
                probe.settimeout(5.0)
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                try:
                    answer = probe.recv(64)
                except TimeoutError:
                    pytest.fail("a connection was accepted after the drain and never answered")
                assert answer == b"" or answer.startswith(b"HTTP/1.1 ")  # answered, or closed at once
    finally:
        stream.close()
        stop_server(process)

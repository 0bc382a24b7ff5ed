"""An asyncio load generator (one keep-alive connection per virtual client, see ``loadtest.http1``) for the
benchmark and the soak: far lighter per request than locust, so more of the shared cores stay with the server.

``run_level`` keeps ``concurrency`` clients busy (closed loop: each sends its next request when the previous
answer is in and checked), or, with ``rate``, paces them to that many requests/s (latency then counts from
the scheduled start, so a late client does not hide queueing). Only requests that finish inside the measuring
window (after ``warmup_s``) count; the CPU used by this process, the server and the machine over the same
window is recorded next to the figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from loadtest.checks import CheckFailed, ModelInfo, model_info
from loadtest.http1 import Connection, HTTPFailure
from loadtest.probes import CpuMeter, cpu_usage
from loadtest.traffic import Call, Factory

try:  # uvloop ships with uvicorn[standard]; it makes the client cheaper, not the server faster
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

REQUEST_TIMEOUT_S = 60.0

WindowHook = Callable[[], Awaitable[None]]


@dataclass
class LevelResult:
    concurrency: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    images: int = 0
    by_endpoint: Counter[tuple[str, int]] = field(default_factory=Counter)  # (route, status) -> answers
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    bytes_received: int = 0
    # every answer, inside the window or not (warm-up, stragglers): what the server saw from this client
    all_by_endpoint: Counter[tuple[str, int]] = field(default_factory=Counter)
    all_images: int = 0
    all_errors: int = 0

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


async def fetch_model_info(connection: Connection) -> ModelInfo:
    answer = await connection.request("GET", "/v1/models")
    if answer.status != 200:
        raise CheckFailed(f"GET /v1/models answered {answer.status}: {answer.body[:200]!r}")
    return model_info(json.loads(answer.body))


@dataclass
class _Level:
    """One measuring window: the clients' shared state."""

    factory: Factory
    info: ModelInfo
    window_start: float
    window_end: float
    rate: float | None
    result: LevelResult
    begin: float
    slots_taken: int = 0

    def slot(self) -> float:
        """The next scheduled start of a paced run: ``begin + k / rate`` (no accumulated rounding)."""
        slot = self.begin + self.slots_taken / self.rate  # type: ignore[operator]
        self.slots_taken += 1
        return slot

    async def client(self, connection: Connection, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self.rate:
                    started = self.slot()
                    if started >= self.window_end:
                        return
                    await asyncio.sleep(max(started - loop.time(), 0.0))
                else:
                    started = loop.time()
                    if started >= self.window_end:
                        return
                await self.send(connection, self.factory(rng, self.info), started)
        finally:
            await connection.close()

    async def send(self, connection: Connection, call: Call, started: float) -> None:
        body = json.dumps(call.body).encode() if call.body is not None else None
        error, status, size = None, 0, 0
        try:
            answer = await connection.request(call.method, call.url, body)
            status, size = answer.status, len(answer.body)
            call.check(status, answer.content_type, answer.body)
        except CheckFailed as exc:
            error = f"{call.name}: {exc}"
        except HTTPFailure as exc:
            error = f"{call.name}: {exc}"
        finished = asyncio.get_running_loop().time()
        result = self.result
        result.all_by_endpoint[(call.endpoint, status)] += 1
        result.all_errors += error is not None
        result.all_images += call.images if error is None else 0
        if not self.window_start <= finished <= self.window_end:
            return
        result.by_endpoint[(call.endpoint, status)] += 1
        result.bytes_received += size
        if error:
            result.errors[error[:300]] += 1
        else:
            result.latencies_s.append(finished - started)
            result.images += call.images


async def _run_level(
    url: str,
    factory: Factory,
    concurrency: int,
    seconds: float,
    warmup_s: float,
    seed: int,
    rate: float | None,
    server_pid: int | None,
    on_start: WindowHook | None,
    on_end: WindowHook | None,
    headers: dict[str, str] | None,
    info: ModelInfo | None,
) -> LevelResult:
    tls = ssl.create_default_context() if url.startswith("https") else None
    connections = [Connection(url, headers, REQUEST_TIMEOUT_S, tls) for _ in range(concurrency)]
    if info is None:
        info = await fetch_model_info(connections[0])
    loop = asyncio.get_running_loop()
    begin = loop.time()
    result = LevelResult(concurrency, seconds)
    level = _Level(factory, info, begin + warmup_s, begin + warmup_s + seconds, rate, result, begin)

    async def window() -> None:
        meter = CpuMeter(server_pid)
        await asyncio.sleep(max(level.window_start - loop.time(), 0.0))
        if on_start:
            await on_start()
        first = meter.read()
        await asyncio.sleep(max(level.window_end - loop.time(), 0.0))
        last = meter.read()
        if on_end:
            await on_end()
        result.cpu = cpu_usage(first, last)

    watcher = asyncio.create_task(window())
    rngs = [random.Random(seed * 1_000_003 + i) for i in range(concurrency)]
    await asyncio.gather(*(level.client(c, rng) for c, rng in zip(connections, rngs, strict=True)))
    await watcher
    return result


def run_level(
    url: str,
    factory: Factory,
    concurrency: int,
    seconds: float,
    *,
    warmup_s: float = 1.0,
    seed: int = 0,
    rate: float | None = None,
    server_pid: int | None = None,
    on_start: WindowHook | None = None,
    on_end: WindowHook | None = None,
    headers: dict[str, str] | None = None,
    info: ModelInfo | None = None,
) -> LevelResult:
    """One measuring window of ``seconds`` after ``warmup_s`` of the same load; see the module docstring.
    ``info`` (the served model) is read from ``GET /v1/models`` when not given."""
    if concurrency < 1 or seconds <= 0 or warmup_s < 0 or (rate is not None and rate <= 0):
        raise ValueError(
            f"need concurrency >= 1, seconds > 0, warmup_s >= 0 and rate > 0; got concurrency={concurrency}, "
            f"seconds={seconds}, warmup_s={warmup_s}, rate={rate}"
        )
    coroutine = _run_level(
        url, factory, concurrency, seconds, warmup_s, seed, rate, server_pid, on_start, on_end, headers, info
    )
    if uvloop is not None:
        return uvloop.run(coroutine)
    return asyncio.run(coroutine)

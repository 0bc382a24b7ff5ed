"""The asyncio load generator against a real server: every answer checks, and the server's own counters
(/metrics) agree with what the client saw, per endpoint and status and in images."""

from __future__ import annotations

import httpx

from loadtest import server, stats
from loadtest.loadgen import run_level
from loadtest.soak import MIX, requests_seen_by_server


def test_mixed_load_checks_and_matches_server_metrics(served: server.Server) -> None:
    before = stats.parse_metrics(httpx.get(f"{served.url}/metrics").text)
    result = run_level(
        served.url, MIX, concurrency=4, seconds=1.5, warmup_s=0.5, seed=3, server_pid=served.pid
    )
    after = stats.parse_metrics(httpx.get(f"{served.url}/metrics").text)

    assert result.error_count == 0 and result.all_errors == 0, result.errors
    assert result.ok > 0 and result.all_images >= result.images > 0
    server_seen = requests_seen_by_server(before, after)
    client_seen = {key: count for key, count in result.all_by_endpoint.items()}
    client_seen[("/v1/models", 200)] = 1  # the generator reads the model once before it starts
    assert server_seen == client_seen
    assert stats.total_delta(before, after, "gan_images_generated_total") == result.all_images
    assert {"client_cores", "server_cores", "machine_busy_cores"} <= set(result.cpu)


def test_paced_load_sends_at_most_the_scheduled_requests(served: server.Server) -> None:
    result = run_level(served.url, MIX, concurrency=2, seconds=1.0, warmup_s=0.0, rate=20.0, seed=4)
    assert result.error_count == 0
    assert 0 < sum(result.all_by_endpoint.values()) <= 20  # slots at 0, 0.05, ... 0.95 s

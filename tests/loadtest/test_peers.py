"""The framework peers gan-bench drives besides LitServe (``tests/loadtest/test_loadtest_litserve.py``): Ray
Serve (``loadtest.ray_peer``, the ``peers`` extra) and BentoML (``loadtest.bentoml_peer``, its own virtual
environment), each skipped where its framework is not installed.
Started through ``loadtest.server`` as gan-bench starts them, each answers the service's bytes for the same
request, alone and batched by the framework (20 at once), and rejects what the service rejects; stopped, it
leaves no process behind."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import psutil
import pytest

from contracts.latents import MAX_SEED
from loadtest import server

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan"
Start = Callable[..., AbstractContextManager[server.Server]]
# (whether its framework is here, the loadtest.server context manager that starts its peer); BentoML runs from
# a virtual environment of its own (GAN_BENCH_BENTOML_PYTHON, see loadtest/bentoml_peer.py)
PEERS: dict[str, tuple[Callable[[], bool], Start]] = {
    "ray": (lambda: importlib.util.find_spec("ray") is not None, server.ray_peer),
    "bentoml": (lambda: server.bentoml_python() is not None, server.bentoml_peer),
}


def _answers(client: httpx.Client, url: str, requests: list[tuple[int, int]]) -> list[httpx.Response]:
    """``POST /generate`` for every (label, seed), all at once."""

    def post(request: tuple[int, int]) -> httpx.Response:
        return client.post(f"{url}/generate", params={"label": request[0], "seed": request[1]})

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(post, requests))


@pytest.mark.parametrize("peer", list(PEERS))
def test_a_framework_peer_answers_the_services_bytes(
    peer: str, served: server.Server, tmp_path: Path
) -> None:
    present, start = PEERS[peer]
    if not present():
        pytest.skip(f"{peer} is not installed here")
    with (
        start(tmp_path / f"{peer}.log", MODEL_DIR, port=server.free_port()) as peer_server,
        httpx.Client(timeout=60.0) as client,
    ):
        url = peer_server.url
        tree = psutil.Process(peer_server.pid).children(recursive=True)
        [want] = _answers(client, served.url, [(3, 4)])
        [got] = _answers(client, url, [(3, 4)])
        assert want.status_code == 200 and got.status_code == 200
        assert got.headers["content-type"] == "image/png" and got.headers["X-Seed"] == "4"
        assert got.content == want.content

        # 20 at once: the framework batches them; each answer is still its own request's image
        requests = [(label, seed) for label in range(10) for seed in (5, 6)]
        expected, answers = _answers(client, served.url, requests), _answers(client, url, requests)
        for request, answer, reference in zip(requests, answers, expected, strict=True):
            assert answer.status_code == 200 and answer.content == reference.content, request

        assert client.post(f"{url}/generate", params={"label": 10, "seed": 4}).status_code == 422
        assert client.post(f"{url}/generate", params={"label": -1, "seed": 4}).status_code == 422
        assert client.post(f"{url}/generate", params={"label": 3, "seed": MAX_SEED + 1}).status_code == 422
        drawn = client.post(f"{url}/generate", params={"label": 3})
        assert drawn.status_code == 200 and int(drawn.headers["X-Seed"]) >= 0
    # stopped by SIGTERM: the framework's processes went with it
    _, alive = psutil.wait_procs(tree, timeout=10.0)
    assert alive == [], [p.pid for p in alive]

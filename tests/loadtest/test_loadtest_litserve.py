"""The LitServe peer (``loadtest.litserve_peer``, the ``peers`` extra): skipped without litserve. Started as
gan-bench starts it, it answers the service's bytes for the same request, single and batched by LitServe,
and rejects what the service rejects."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from loadtest import server

pytest.importorskip("litserve")

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "mnist-cdcgan"


def test_the_litserve_peer_answers_the_services_bytes(served: server.Server, tmp_path: Path) -> None:
    """Same model, same seed rule, same PNG encoder: the peers differ in serving, not in the work each answer
    costs."""
    with (
        server.litserve_peer(tmp_path / "litserve.log", MODEL_DIR, port=server.free_port()) as peer,
        httpx.Client(timeout=30.0) as client,
    ):
        expected = client.post(f"{served.url}/generate", params={"label": 3, "seed": 4})
        answer = client.post(f"{peer.url}/generate", params={"label": 3, "seed": 4})
        assert expected.status_code == 200 and answer.status_code == 200
        assert answer.headers["content-type"] == "image/png" and answer.headers["X-Seed"] == "4"
        assert answer.content == expected.content

        # many at once: LitServe batches them into one ORT call; each answer is still its own request's
        requests = [(label, seed) for label in range(10) for seed in (4, 5)]
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(
                pool.map(
                    lambda r: client.post(f"{peer.url}/generate", params={"label": r[0], "seed": r[1]}),
                    requests,
                )
            )
        for (label, seed), got in zip(requests, answers, strict=True):
            want = client.post(f"{served.url}/generate", params={"label": label, "seed": seed})
            assert got.status_code == 200 and got.content == want.content, (label, seed)

        assert client.post(f"{peer.url}/generate", params={"label": 10, "seed": 4}).status_code == 422
        assert client.post(f"{peer.url}/generate", params={"label": 3, "seed": -1}).status_code == 422
        drawn = client.post(f"{peer.url}/generate", params={"label": 3})
        assert drawn.status_code == 200 and int(drawn.headers["X-Seed"]) >= 0

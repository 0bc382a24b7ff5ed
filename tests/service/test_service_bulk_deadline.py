"""A bulk request that misses its deadline is a 504, in its answer where one can still be sent and always in
the metrics and the access log: before the first chunk, a JSON 504 with ``Retry-After``; part-way, a stream
cut short (no valid archive, the client raises), never counted as a 500 or a 200."""

from __future__ import annotations

import io
import json
import logging
import threading
import zipfile

import httpx
import numpy as np
import pytest
from service_support import LIVE_SETTINGS, GatedRuntime, make_settings, serve_in_thread
from test_service_ops import metric_value

from service.logs import ACCESS_LOGGER

DEADLINE_S = 0.5
BULK = {"n": 512, "seed": 3}


class StallsAfter(GatedRuntime):
    """After warm-up, ``passes`` inference calls run; every later one waits for ``release`` (a batch that
    never finishes in time), so the bulk chunks behind it miss their deadline."""

    passes = 0

    def __init__(self, spec, settings):
        super().__init__(spec, settings)
        self.release = threading.Event()

    def run(self, kind, z, condition):
        if self.warm and len(self.calls) >= self.passes:
            self.calls.append((kind, len(z), condition.copy()))
            self.release.wait(timeout=60)
        return super().run(kind, z, condition)


def serve_stalling(passes: int, **overrides):
    settings = make_settings(
        **LIVE_SETTINGS,
        bulk_chunk=64,
        bulk_prefetch=1,
        request_timeout_s=DEADLINE_S,
        access_log=True,
        **overrides,
    )
    runtimes: list[StallsAfter] = []

    def factory(spec, settings):
        runtime = StallsAfter(spec, settings)
        runtime.passes = passes
        runtimes.append(runtime)
        return runtime

    return serve_in_thread(settings, factory), runtimes


def bulk_statuses(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [
        record.fields["status"]
        for record in caplog.records
        if record.name == ACCESS_LOGGER and record.fields["endpoint"] == "/v1/bulk"
    ]


def test_a_bulk_request_whose_first_chunk_misses_its_deadline_gets_504_with_retry_after(caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    server, runtimes = serve_stalling(passes=0)
    with server as url:
        runtimes[0].warm = True
        try:
            response = httpx.post(url + "/v1/bulk", json=BULK, timeout=60)
        finally:
            runtimes[0].release.set()
        assert response.status_code == 504, response.text[:300]
        assert response.headers["retry-after"] == "1"
        assert "deadline exceeded" in json.loads(response.content)["error"]
        metrics = httpx.get(url + "/metrics").text
        assert metric_value(metrics, "gan_http_requests_total", endpoint="/v1/bulk", status="504") == 1
        assert metric_value(metrics, "gan_http_requests_total", endpoint="/v1/bulk", status="500") == 0
        assert metric_value(metrics, "gan_bulk_streams") == 0  # its slot was freed
    assert bulk_statuses(caplog) == [504]


def test_a_bulk_stream_that_misses_its_deadline_part_way_ends_cut_short_and_is_counted_504(caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    server, runtimes = serve_stalling(passes=1)
    with server as url:
        runtimes[0].warm = True
        received = bytearray()
        try:
            with (  # no end of the chunked body: the client knows
                pytest.raises(httpx.RemoteProtocolError),
                httpx.stream("POST", url + "/v1/bulk", json=BULK, timeout=60) as response,
            ):
                assert response.status_code == 200  # the answer started with the first chunk
                for block in response.iter_bytes():
                    received += block
        finally:
            runtimes[0].release.set()
        assert 0 < len(received) < 512 * 28 * 28
        with pytest.raises(zipfile.BadZipFile):  # what arrived is no valid archive
            np.load(io.BytesIO(bytes(received)), allow_pickle=False)
        metrics = httpx.get(url + "/metrics").text
        assert metric_value(metrics, "gan_http_requests_total", endpoint="/v1/bulk", status="504") == 1
        for status in ("500", "200"):
            assert metric_value(metrics, "gan_http_requests_total", endpoint="/v1/bulk", status=status) == 0
        assert metric_value(metrics, "gan_bulk_streams") == 0
    assert bulk_statuses(caplog) == [504]

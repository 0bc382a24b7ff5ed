"""The report arithmetic on inputs whose answers are known by hand."""

from __future__ import annotations

import math

import pytest

from loadtest import stats

METRICS_BEFORE = """\
# TYPE gan_batch_size histogram
gan_batch_size_bucket{le="1.0"} 2.0
gan_batch_size_bucket{le="2.0"} 2.0
gan_batch_size_bucket{le="4.0"} 3.0
gan_batch_size_bucket{le="8.0"} 3.0
gan_batch_size_bucket{le="+Inf"} 3.0
gan_batch_size_count 3.0
gan_batch_size_sum 5.0
# TYPE gan_http_requests counter
gan_http_requests_total{endpoint="/generate",method="POST",status="200"} 10.0
"""
# since: 4 batches of 1, 1 of 3 (padded to 4), 2 of 8 -> 4 + 3 + 16 = 23 images; 7 more requests, a 429
METRICS_AFTER = """\
# TYPE gan_batch_size histogram
gan_batch_size_bucket{le="1.0"} 6.0
gan_batch_size_bucket{le="2.0"} 6.0
gan_batch_size_bucket{le="4.0"} 8.0
gan_batch_size_bucket{le="8.0"} 10.0
gan_batch_size_bucket{le="+Inf"} 10.0
gan_batch_size_count 10.0
gan_batch_size_sum 28.0
# TYPE gan_http_requests counter
gan_http_requests_total{endpoint="/generate",method="POST",status="200"} 16.0
gan_http_requests_total{endpoint="/generate",method="POST",status="429"} 1.0
"""


def test_percentiles_interpolate_between_order_statistics() -> None:
    values = list(range(1, 101))  # 1..100
    assert stats.percentiles(values) == {"p50": 50.5, "p95": 95.05, "p99": 99.01}
    assert stats.percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert stats.percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_summarize_in_milliseconds() -> None:
    summary = stats.summarize([0.010, 0.020, 0.030, 0.040], seconds=2.0)
    assert summary.count == 4 and summary.rps == 2.0
    assert summary.p50_ms == pytest.approx(25.0) and summary.max_ms == pytest.approx(40.0)
    assert stats.summarize([], 1.0).p99_ms is None
    with pytest.raises(ValueError, match="seconds"):
        stats.summarize([0.1], 0)


def test_histogram_delta_per_bucket() -> None:
    before, after = stats.parse_metrics(METRICS_BEFORE), stats.parse_metrics(METRICS_AFTER)
    delta = stats.histogram_delta(before, after, "gan_batch_size")
    assert delta.buckets == {1.0: 4.0, 2.0: 0.0, 4.0: 1.0, 8.0: 2.0, math.inf: 0.0}
    assert (delta.count, delta.sum) == (7.0, 23.0)
    assert delta.mean() == pytest.approx(23 / 7)


def test_counter_deltas_by_label() -> None:
    before, after = stats.parse_metrics(METRICS_BEFORE), stats.parse_metrics(METRICS_AFTER)
    assert stats.total_delta(before, after, "gan_http_requests_total") == 7.0
    assert stats.total_delta(before, after, "gan_http_requests_total", {"status": "429"}) == 1.0
    assert stats.total_delta(before, after, "gan_http_requests_total", {"endpoint": "/other"}) == 0.0


def test_model_seconds_per_image_weights_batches_by_padded_size() -> None:
    seconds_per_batch = {1: 0.001, 2: 0.0015, 4: 0.002, 8: 0.004}
    batches = {1.0: 4.0, 2.0: 0.0, 4.0: 1.0, 8.0: 2.0, math.inf: 0.0}
    # (4 * 1 ms + 1 * 2 ms + 2 * 4 ms) / 23 images
    assert stats.model_seconds_per_image(batches, 23, seconds_per_batch) == pytest.approx(0.014 / 23)
    with pytest.raises(ValueError, match="padded batch size 16"):
        stats.model_seconds_per_image({16.0: 1.0}, 16, seconds_per_batch)
    with pytest.raises(ValueError, match="no images"):
        stats.model_seconds_per_image({}, 0, seconds_per_batch)


def test_composed_limit_adds_the_parts() -> None:
    # framework 1000 req/s = 1 ms, model 0.5 ms, png 0.4 ms, latent 0.1 ms -> 2 ms per request -> 500 req/s
    limit = stats.composed_limit(1000.0, 0.0005, 0.0004, 0.0001)
    assert limit.seconds_per_request == pytest.approx(0.002)
    assert limit.rps == pytest.approx(500.0)
    assert limit.shares() == pytest.approx({"framework": 0.5, "model": 0.25, "png": 0.2, "latent": 0.05})
    assert stats.ratio(400.0, limit.rps) == pytest.approx(0.8)
    assert stats.ratio(None, 1.0) is None and stats.ratio(1.0, 0.0) is None
    with pytest.raises(ValueError, match="framework"):
        stats.composed_limit(0.0, 0.001, 0.001)
    with pytest.raises(ValueError, match="png"):
        stats.composed_limit(100.0, 0.001, -0.001)

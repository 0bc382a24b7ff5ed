"""``POST /generate`` is served by a plain route ahead of its documented one (``common.hot_route``): the
answer, its request id, its metrics label, its 422 and 405, and the OpenAPI entry are the documented route's;
with API keys the documented route (and its key check) serves it."""

from __future__ import annotations

from service_support import make_settings, serve_in_process
from test_service_ops import metric_value


def test_the_hot_route_keeps_ids_metrics_errors_and_the_document():
    with serve_in_process(make_settings()) as client:
        answer = client.post("/generate", params={"label": 3, "seed": 4})
        refused = client.post("/generate", params={"label": 3, "sed": 4})
        wrong_method = client.get("/generate")
        metrics = client.get("/metrics").text
        document = client.get("/openapi.json").json()
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.headers["x-request-id"] and answer.headers["X-Seed"] == "4"
    assert refused.status_code == 422 and "sed" in refused.text and refused.headers["x-request-id"]
    assert wrong_method.status_code == 405
    for status in ("200", "422"):
        assert metric_value(metrics, "gan_http_requests_total", endpoint="/generate", status=status) == 1
    assert "post" in document["paths"]["/generate"]


def test_with_api_keys_generate_still_asks_for_one():
    with serve_in_process(make_settings(api_keys="k1")) as client:
        assert client.post("/generate", params={"label": 3}).status_code == 401
        assert client.post("/generate", params={"label": 3}, headers={"X-API-Key": "k1"}).status_code == 200

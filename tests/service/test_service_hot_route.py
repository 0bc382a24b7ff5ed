"""``POST /generate`` is served straight from the middleware (``service.hot_lane``): the
answer, its request id, its metrics label, its 422 and 405, and the OpenAPI entry are the documented route's;
with API keys the documented route (and its key check) serves it."""

from __future__ import annotations

from service_support import make_settings, serve_in_process, wait_ready
from test_service_ops import metric_value

from service.hot_lane import HotLane
from service.main import create_app


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


def test_the_hot_lane_serves_without_keys_and_a_failure_is_a_500():
    """The lane serves ``POST /generate`` (not the router): an error no handler knows goes up to the app's
    error middleware, a 500, counted as one."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as client:
        wait_ready(client.get)
        lane = next(m for m in client.app.user_middleware if m.cls is HotLane)
        endpoint = lane.kwargs["endpoints"]["/generate"]

        async def broken(request):
            raise RuntimeError("boom")

        lane.kwargs["endpoints"]["/generate"] = broken  # the lane's own mapping: the router never sees this
        failed = client.post("/generate", params={"label": 3})
        lane.kwargs["endpoints"]["/generate"] = endpoint
        metrics = client.get("/metrics").text
    assert failed.status_code == 500
    assert metric_value(metrics, "gan_http_requests_total", endpoint="/generate", status="500") == 1


def test_with_api_keys_there_is_no_lane():
    with serve_in_process(make_settings(api_keys="k1")) as client:
        assert not [m for m in client.app.user_middleware if m.cls is HotLane]

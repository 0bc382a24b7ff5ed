"""Property-based: requests generated from the OpenAPI schema (valid and invalid ones) sent to a live server
never get a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from service_support import LIVE_SETTINGS, make_settings

from service.main import create_app

MAX_EXAMPLES = 6  # per operation: enough to reach the bounds, small enough to stay fast

schema = schemathesis.openapi.from_dict(create_app(make_settings(**LIVE_SETTINGS)).openapi())


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, live_server):
    response = case.call(base_url=live_server, timeout=120)
    assert response.status_code < 500, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    )

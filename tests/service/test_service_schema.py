"""Property-based: requests generated from the OpenAPI schema, valid ones (positive) and invalid ones
(negative), sent to a live server with a small ``GAN_MAX_BULK_N``, pass every schemathesis check: no 5xx,
every answer documented and conforming, every schema-invalid request refused, and every schema-valid request
accepted, but where it breaks one of the few rules between fields that JSON Schema cannot state
(``UNSTATED``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from service_support import LIVE_SETTINGS, free_port, make_settings, start_server, stop_server, wait_ready

from service.main import create_app

MAX_EXAMPLES = 6  # per operation and mode: enough to reach the bounds, small enough to stay fast
SCHEMA_SETTINGS = {**LIVE_SETTINGS, "max_bulk_n": 64}  # a valid bulk request streams at most 64 images

# (route, words of its 422) for rules between fields or against the queue that the schema cannot state
UNSTATED = {
    ("/v1/bulk", "counts add up to"),  # 1 <= sum(counts) <= max_bulk_n
    ("/v1/bulk", "weights must have a positive sum"),
    ("/v1/arithmetic", "more than the server's queue holds"),  # labels x images per label
    # an image is base64 of PNG or .npy bytes: the schema says base64 text, not what the bytes must hold
    *((route, words) for route in ("/v1/project", "/v1/edit") for words in ("base64", "PNG", ".npy")),
    ("/v1/edit", "not used by mode"),  # which fields each edit mode takes
    ("/v1/edit", "needs"),
    # image i uses seed + i: a seed near the top leaves no room for n images (seed <= 2**32 - n)
    *((route, "would go past") for route in ("/generate", "/v1/generate", "/v1/bulk", "/v1/edit")),
}

schema = schemathesis.openapi.from_dict(create_app(make_settings(**SCHEMA_SETTINGS)).openapi())


@pytest.fixture(scope="module")
def schema_server() -> Iterator[str]:
    """`gan-serve` with the settings the schema above was made with."""
    port = free_port()
    process = start_server(port, drain_s=0, **SCHEMA_SETTINGS)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(lambda path: httpx.get(url + path))
        yield url
    finally:
        stop_server(process)


def written_as_ints(value: object) -> object:
    """``value`` with every whole float (``7.0``) written as an int: since draft 6 JSON Schema counts ``7.0``
    as an integer, so a schema cannot ask for ``7``, but the service's bodies are strict (an int is written
    as one, docs/operations.md). The same instance of the schema, written as the service takes it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: written_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [written_as_ints(item) for item in value]
    return value


def unstated_rule(path: str, response: httpx.Response) -> bool:
    if response.status_code != 422:
        return False
    error = json.loads(response.content).get("error", "")
    return any(route == path and words in error for route, words in UNSTATED)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_schema_states_what_the_server_accepts(case, schema_server):
    positive = case.meta.generation.mode is GenerationMode.POSITIVE
    if positive:
        case.body = written_as_ints(case.body)
    response = case.call(base_url=schema_server, timeout=120)
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text}"
    if positive and unstated_rule(case.path, response):
        return
    case.validate_response(response)


def test_the_schema_states_the_served_models_labels_and_the_exclusive_fields():
    components = schema.raw_schema["components"]["schemas"]
    labels = components["LabelsRequest"]["properties"]["labels"]["items"]
    assert (labels["minimum"], labels["maximum"]) == (0, 9)  # the model's 10 classes
    assert components["LatentSource"]["oneOf"] == [
        {"properties": {"seed": {"type": "integer"}}, "required": ["seed"]},
        {"properties": {"latent": {"type": "array"}}, "required": ["latent"]},
    ]
    latent = components["LatentSource"]["properties"]["latent"]["anyOf"][0]
    assert latent["minItems"] == latent["maxItems"] == 128  # the model's latent_dim
    bulk = components["BulkRequest"]
    assert [branch["required"] for branch in bulk["oneOf"]] == [["counts"], ["n"]]
    assert bulk["properties"]["n"]["anyOf"][0]["maximum"] == 64

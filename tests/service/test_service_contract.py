"""A strict contract, through the real app: unknown, repeated and misread parameters are 422s, JSON bodies
take no meaning-changing coercions, 400/413 are JSON (and documented), 422s say what to do, and a request
that could never fit the queue is refused at once (never 429)."""

from __future__ import annotations

import asyncio

import pytest
from service_support import MODEL_DIR, make_settings
from test_service_batcher import job, started_batcher

from service import batcher as batching
from service.model_repo import load_model_dir
from service.runtime import GraphKind

SPEC = load_model_dir(MODEL_DIR)
TOP = SPEC.num_classes - 1
GENERATE_PARAMETERS = ["label", "n", "seed", "format", "truncation"]
BODY_ROUTES = {
    "/v1/generate": {"labels": [1], "seed": 0},
    "/v1/interpolate": {"start": {"seed": 1}, "end": {"seed": 2}, "label": 3, "steps": 2},
    "/v1/arithmetic": {"terms": [{"seeds": [1]}], "labels": [2]},
    "/v1/every-label": {"seed": 1},
    "/v1/bulk": {"n": 2, "seed": 0},
}
if SPEC.label_morph is not None:
    BODY_ROUTES["/v1/interpolate/labels"] = {"seed": 1, "start_label": 3, "end_label": 8, "steps": 2}


def refused(response, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["X-Request-ID"]
    assert "Retry-After" not in response.headers
    return response.json()


def error_at(body: dict, loc: list) -> dict:
    [error] = [e for e in body["detail"] if e["loc"] == loc]
    return error


# --- 1. unknown and repeated query parameters


def test_an_unknown_query_parameter_is_422_naming_it_and_the_allowed_ones(client):
    body = refused(client.post("/generate?label=3&sede=42"))  # a misspelt seed: never random images
    error = error_at(body, ["query", "sede"])
    assert "unknown query parameter 'sede'" in error["msg"] and error["input"] == "42"
    assert all(name in error["allowed"] for name in GENERATE_PARAMETERS)
    assert "sede" in body["error"] and "seed" in body["error"]


def test_a_repeated_query_parameter_is_422_naming_it(client):
    body = refused(client.post("/generate?label=3&label=4"))
    error = error_at(body, ["query", "label"])
    assert "given 2 times" in error["msg"] and error["input"] == ["3", "4"]
    assert "label" in body["error"]
    refused(client.post("/generate?label=3&seed=1&seed=1"))  # even with the same value


def test_every_misfit_of_a_query_is_named_at_once(client):
    body = refused(client.post("/generate?label=3&n=2&n=3&colour=red&seed=1_0"))
    assert {tuple(e["loc"]) for e in body["detail"]} == {
        ("query", "n"),
        ("query", "colour"),
        ("query", "seed"),
    }


def test_an_unknown_parameters_long_name_is_echoed_cut_short(client):
    response = client.post("/generate?label=3&" + "x" * 60_000 + "=1")
    assert response.status_code == 422 and len(response.content) < 2_000, len(response.content)
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "x" * 60 + "..."]


def test_the_query_route_refuses_a_body_it_would_ignore(client):
    # the JSON routes refuse query parameters; /generate, whose parameters are the query, refuses a body
    error = error_at(refused(client.post("/generate?label=3", json={"label": 3, "n": 16})), ["body"])
    assert "/v1/generate" in error["msg"] and error["allowed"] == "no body"
    assert client.post("/generate?label=3", headers={"Content-Length": "0"}).status_code == 200


@pytest.mark.parametrize("path", sorted(BODY_ROUTES))
def test_routes_with_a_json_body_refuse_query_parameters(client, path):
    # a seed in the query of a body route would be ignored: random images again
    body = refused(client.post(f"{path}?seed=5", json=BODY_ROUTES[path]))
    error = error_at(body, ["query", "seed"])
    assert "JSON body" in error["msg"] and "JSON body" in error["allowed"]
    assert client.post(path, json=BODY_ROUTES[path]).status_code == 200


# --- 2. no coercion that changes meaning


@pytest.mark.parametrize(
    ("query", "field", "allowed"),
    [
        ("label=3&n=7_0", "n", "1 <= n <= 1024"),  # int("7_0") == 70
        ("label=3&n=7.0", "n", "1 <= n <= 1024"),
        ("label=3&n=+7", "n", "1 <= n <= 1024"),
        ("label=3&n=%207", "n", "1 <= n <= 1024"),
        ("label=1_0", "label", f"0 <= label <= {TOP}"),
        ("label=3&seed=4_2", "seed", None),
        ("label=3&truncation=0_5", "truncation", "0 < truncation <= 1"),  # float("0_5") == 5.0
    ],
)
def test_query_numbers_are_read_only_as_written(client, query, field, allowed):
    body = refused(client.post(f"/generate?{query}"))
    error = error_at(body, ["query", field])
    assert "plain decimal" in error["msg"]
    if allowed is not None:
        assert error["allowed"] == allowed


def test_plain_query_numbers_still_work(client):
    response = client.post("/generate?label=3&n=2&seed=0042&truncation=0.5&format=npy")
    assert response.status_code == 200 and response.headers["X-Seed"] == "42"
    error = error_at(refused(client.post("/generate?label=-1")), ["query", "label"])
    assert error["allowed"] == f"0 <= label <= {TOP}"  # a negative number gets its range, as before


@pytest.mark.parametrize(
    ("path", "body", "loc", "hint"),
    [
        (
            "/v1/arithmetic",
            {"terms": [{"seeds": [1]}], "show_terms": 0},
            ["body", "show_terms"],
            "true or false",
        ),
        ("/v1/generate", {"labels": ["1"]}, ["body", "labels", 0], "JSON integer"),
        ("/v1/generate", {"labels": [7.0]}, ["body", "labels", 0], "JSON integer"),
        ("/v1/generate", {"labels": [1], "seed": 7.0}, ["body", "seed"], "JSON integer"),
        ("/v1/generate", {"labels": [1], "same_latent": "true"}, ["body", "same_latent"], "true or false"),
        ("/v1/generate", {"labels": [1], "truncation": "0.5"}, ["body", "truncation"], "JSON number"),
        (
            "/v1/interpolate",
            {"start": {"seed": "1"}, "end": {"seed": 2}, "label": 3},
            ["body", "start", "seed"],
            "JSON integer",
        ),
        ("/v1/arithmetic", {"terms": [{"seeds": [1.0]}]}, ["body", "terms", 0, "seeds", 0], "JSON integer"),
        ("/v1/bulk", {"n": 10.0}, ["body", "n"], "JSON integer"),
        ("/v1/bulk", {"counts": {"3": 1.0}}, ["body", "counts", "3"], "JSON integer"),
        ("/v1/bulk", {"counts": {"1_0": 1}}, ["body", "counts", "1_0", "[key]"], "class indices in digits"),
        # the schema's property names: "3", never "03" or "-0"
        ("/v1/bulk", {"counts": {"03": 1}}, ["body", "counts", "03", "[key]"], "class indices in digits"),
        ("/v1/bulk", {"counts": {"-0": 1}}, ["body", "counts", "-0", "[key]"], "class indices in digits"),
        (
            "/v1/bulk",
            {"n": 4, "weights": {" 3": 1}},
            ["body", "weights", " 3", "[key]"],
            "class indices in digits",
        ),
    ],
)
def test_json_bodies_refuse_coercions_that_change_meaning(client, path, body, loc, hint):
    error = error_at(refused(client.post(path, json=body)), loc)
    assert hint in error["msg"]


def test_json_bodies_keep_what_json_means(client):
    # an int is a float, enums and literals are strings, label keys are strings of digits
    ok = {"labels": [1], "seed": 3, "truncation": 1, "format": "npy"}
    assert client.post("/v1/generate", json=ok).status_code == 200
    body = {"start": {"seed": 1}, "end": {"latent": [0] * SPEC.latent_dim}, "label": 3, "method": "lerp"}
    assert client.post("/v1/interpolate", json=body).status_code == 200
    assert client.post("/v1/bulk", json={"counts": {"3": 2}, "seed": 1}).headers["X-Count"] == "2"


# --- 3. 400 and 413 are JSON, documented; HEAD /healthz


def test_a_body_over_the_limit_is_a_json_413_with_a_request_id(client):
    limit = make_settings().max_body_bytes
    big = b'{"labels": [' + b"1, " * (limit // 3) + b"1]}"
    headers = {"content-type": "application/json", "X-Request-ID": "big-1"}
    response = client.post("/v1/generate", content=big, headers=headers)
    body = refused(response, 413)
    assert response.headers["X-Request-ID"] == "big-1"
    assert str(limit) in body["error"] and "GAN_MAX_BODY_BYTES" in body["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    assert (
        "GAN_MAX_BODY_BYTES"
        in refused(client.post("/v1/bulk", content=chunks(), headers=headers), 413)["error"]
    )


def test_a_body_that_is_not_utf8_is_a_json_400(client):
    response = client.post(
        "/v1/generate", content=b'{"labels": [1], "x": "\xff"}', headers={"content-type": "application/json"}
    )
    assert "UTF-8" in refused(response, 400)["error"]


def test_head_healthz_is_200_without_a_body(client):
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b"" and response.headers["X-Request-ID"]


def test_openapi_documents_400_413_and_head_healthz(client):
    document = client.get("/openapi.json").json()
    for path in BODY_ROUTES:
        responses = document["paths"][path]["post"]["responses"]
        for code in ("400", "413"):
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, code)
    assert "413" not in document["paths"]["/generate"]["post"]["responses"]  # it reads no body
    assert "200" in document["paths"]["/healthz"]["head"]["responses"]


# --- 4. 422s that say what to do


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_a_body_without_json_content_type_says_to_send_it(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/generate", content=b'{"labels": [1]}', headers=headers)
    error = error_at(refused(response), ["body"])
    assert "send Content-Type: application/json" in error["msg"]
    assert "valid dictionary" not in response.text


def test_truncated_json_says_so_and_where(client):
    whole = b'{"labels": [1, 2, 3], "seed": 1234567, "truncation": 0.75, "format": "npy", "columns": 3}'
    response = client.post("/v1/generate", content=whole[:73], headers={"content-type": "application/json"})
    body = refused(response)
    error = error_at(body, ["body"])
    assert "the body is not complete JSON" in error["msg"] and "at position 73" in error["msg"]
    assert not body["error"].startswith("73")
    invalid = client.post(
        "/v1/generate", content=b'{"labels": [1}', headers={"content-type": "application/json"}
    )
    assert "the body is not valid JSON" in error_at(refused(invalid), ["body"])["msg"]


def test_a_body_that_is_not_an_object_says_so(client):
    assert (
        "must be a JSON object" in error_at(refused(client.post("/v1/generate", json=[1])), ["body"])["msg"]
    )
    assert "needs a JSON object" in error_at(refused(client.post("/v1/generate")), ["body"])["msg"]


@pytest.mark.parametrize("field", ["counts", "weights"])
def test_bulk_label_keys_outside_the_model_are_named_as_labels(client, field):
    body = {"counts": {"12": 1}} if field == "counts" else {"n": 10, "weights": {"12": 1}}
    error = error_at(refused(client.post("/v1/bulk", json=body)), ["body", field, 12])
    assert error["msg"] == f"label 12 is not a label of this model (0..{TOP})"
    assert error["allowed"] == f"labels 0..{TOP} as the keys of {field}"


# --- 5. a request that can never fit


def test_a_request_larger_than_the_queue_is_refused_at_once(client):
    queue = make_settings().max_queue_images
    labels = [i % SPEC.num_classes for i in range(1024)]
    terms = [{"seeds": [1]}] * 4  # each label's row: 4 term means and the result
    response = client.post("/v1/arithmetic", json={"terms": terms, "labels": labels, "show_terms": True})
    error = error_at(refused(response), ["body"])  # an idle server: 429 here would be retried forever
    assert (
        str(5 * 1024) in error["msg"]
        and str(queue) in error["msg"]
        and "GAN_MAX_QUEUE_IMAGES" in error["msg"]
    )
    assert error["allowed"] == f"at most {queue} images"


def test_the_batcher_tells_a_job_that_never_fits_from_a_full_queue():
    # every route checks its image count first; the batcher's own check backs them (never a QueueFull)
    async def scenario():
        batcher, _ = await started_batcher(max_queue_images=1024)
        try:
            with pytest.raises(batching.NeverFits) as caught:
                await batcher.generate(GraphKind.MAIN, *job(0, 1025, 3))
            fits = await batcher.generate(GraphKind.MAIN, *job(0, 1024, 3))
        finally:
            await batcher.close()
        return caught.value, len(fits)

    never, fitted = asyncio.run(scenario())
    assert (never.images, never.queue_images, fitted) == (1025, 1024, 1024)

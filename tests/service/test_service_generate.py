"""POST /generate (the contract) and POST /v1/generate through the real app and the real model."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from service_support import MODEL_DIR, make_settings, serve_in_process

from contracts import latents
from service.model_repo import load_model_dir
from service.runtime import GraphKind, Runtime

SPEC = load_model_dir(MODEL_DIR)
H, W, C = SPEC.image_shape


def npy(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def expected_shape(n: int) -> tuple[int, ...]:
    return (n, H, W) if C == 1 else (n, H, W, C)


def test_one_png_by_default(client):
    response = client.post("/generate", params={"label": 7})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (W, H)
    assert 0 <= int(response.headers["X-Seed"]) <= latents.MAX_SEED


def test_png_grid_for_several_images(client):
    response = client.post("/generate", params={"label": 2, "n": 5, "seed": 1})
    grid = Image.open(io.BytesIO(response.content))
    padding = make_settings().grid_padding
    assert grid.size == (3 * W + 2 * padding, 2 * H + padding)  # 5 images: 3 columns, 2 rows


def test_npy_matches_the_runtime_and_the_seed_scheme(client):
    images = npy(client.post("/generate", params={"label": 3, "n": 4, "seed": 11, "format": "npy"}))
    assert images.shape == expected_shape(4) and images.dtype == np.uint8
    z = latents.request_latents(11, 4, SPEC.latent_dim)
    direct = Runtime(SPEC, make_settings()).run(GraphKind.MAIN, z, np.full(4, 3, dtype=np.int64))
    np.testing.assert_array_equal(images, direct.reshape(images.shape))


def test_same_seed_same_images_and_prefix_property(client):
    params = {"label": 5, "seed": 123, "format": "npy"}
    four = npy(client.post("/generate", params={**params, "n": 4}))
    again = npy(client.post("/generate", params={**params, "n": 4}))
    six = npy(client.post("/generate", params={**params, "n": 6}))
    np.testing.assert_array_equal(four, again)
    np.testing.assert_array_equal(four, six[:4])
    shifted = npy(client.post("/generate", params={**params, "seed": 124, "n": 1}))
    np.testing.assert_array_equal(four[1:2], shifted)


def test_every_images_seed_is_one_a_request_may_name(client):
    # image i uses seed + i: the last seed of a request is at most MAX_SEED, or the request is refused
    top = latents.MAX_SEED
    last = npy(client.post("/generate", params={"label": 2, "n": 3, "seed": top - 2, "format": "npy"}))
    alone = npy(client.post("/generate", params={"label": 2, "seed": top, "format": "npy"}))
    np.testing.assert_array_equal(last[2:], alone)
    for route, kwargs, where in [
        ("/generate", {"params": {"label": 2, "n": 3, "seed": top - 1}}, "query"),
        ("/v1/generate", {"json": {"labels": [1, 2, 3], "seed": top - 1}}, "body"),
    ]:
        refused = client.post(route, **kwargs)
        assert refused.status_code == 422, refused.text
        (error,) = refused.json()["detail"]
        assert error["loc"] == [where, "seed"] and error["allowed"] == f"0 <= seed <= {top - 2} for 3 images"
    same_latent = client.post("/v1/generate", json={"labels": [1, 2, 3], "seed": top, "same_latent": True})
    assert same_latent.status_code == 200, same_latent.text  # one latent: one seed


def test_random_seed_is_returned_and_reproduces(client):
    first = client.post("/generate", params={"label": 1, "n": 2, "format": "npy"})
    seed = int(first.headers["X-Seed"])
    again = client.post("/generate", params={"label": 1, "n": 2, "format": "npy", "seed": seed})
    np.testing.assert_array_equal(npy(first), npy(again))


def test_labels_and_truncation_change_images(client):
    base = {"seed": 9, "n": 2, "format": "npy"}
    a = npy(client.post("/generate", params={**base, "label": 0}))
    b = npy(client.post("/generate", params={**base, "label": 8}))
    t = npy(client.post("/generate", params={**base, "label": 0, "truncation": 0.5}))
    assert not np.array_equal(a, b) and not np.array_equal(a, t)


def test_json_carries_seed_label_latent_and_png(client):
    response = client.post(
        "/generate", params={"label": 4, "n": 3, "seed": 50, "format": "json", "truncation": 0.7}
    )
    body = response.json()
    assert body["seed"] == 50 and body["count"] == 3 and body["truncation"] == 0.7
    assert body["image_shape"] == [H, W, C]
    z = latents.request_latents(50, 3, SPEC.latent_dim, 0.7)
    arrays = npy(
        client.post("/generate", params={"label": 4, "n": 3, "seed": 50, "format": "npy", "truncation": 0.7})
    )
    for i, item in enumerate(body["images"]):
        assert (item["index"], item["seed"], item["label"]) == (i, 50 + i, 4)
        np.testing.assert_array_equal(np.asarray(item["latent"], dtype=np.float32), z[i])
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(item["png"]))))
        np.testing.assert_array_equal(decoded, arrays[i])


def test_max_n_is_served(client):
    n = make_settings().max_n
    assert n >= 1024
    images = npy(client.post("/generate", params={"label": 0, "n": n, "seed": 0, "format": "npy"}))
    assert images.shape == expected_shape(n)


@pytest.mark.parametrize(
    ("params", "field", "allowed"),
    [
        ({}, "label", f"0 <= label <= {SPEC.num_classes - 1}"),
        ({"label": SPEC.num_classes}, "label", f"0 <= label <= {SPEC.num_classes - 1}"),
        ({"label": -1}, "label", f"0 <= label <= {SPEC.num_classes - 1}"),
        ({"label": "seven"}, "label", f"0 <= label <= {SPEC.num_classes - 1}"),
        ({"label": 1, "n": 0}, "n", "1 <= n <= 1024"),
        ({"label": 1, "n": 1025}, "n", "1 <= n <= 1024"),
        ({"label": 1, "seed": -1}, "seed", f"0 <= seed <= {latents.MAX_SEED}"),
        ({"label": 1, "seed": 2**32}, "seed", f"0 <= seed <= {latents.MAX_SEED}"),
        ({"label": 1, "format": "gif"}, "format", "one of png, npy, json"),
        ({"label": 1, "truncation": 0}, "truncation", "0 < truncation <= 1"),
        ({"label": 1, "truncation": 1.5}, "truncation", "0 < truncation <= 1"),
        ({"label": 1, "truncation": "nan"}, "truncation", "0 < truncation <= 1"),
    ],
)
def test_bad_parameters_are_422_naming_field_and_range(client, params, field, allowed):
    response = client.post("/generate", params=params)
    assert response.status_code == 422
    body = response.json()
    [error] = [e for e in body["detail"] if e["loc"][-1] == field]
    assert error["loc"] == ["query", field]
    assert error["allowed"] == allowed
    assert field in body["error"] and allowed in body["error"]


def test_openapi_documents_the_query_of_generate(client):
    # /generate parses its query itself (service.routes.common.parse_query): the schema must still say it all
    parameters = client.get("/openapi.json").json()["paths"]["/generate"]["post"]["parameters"]
    by_name = {p["name"]: p for p in parameters}
    assert list(by_name) == ["label", "n", "seed", "format", "truncation"]
    assert all(p["in"] == "query" for p in parameters)
    assert [name for name, p in by_name.items() if p["required"]] == ["label"]
    label, n = by_name["label"]["schema"], by_name["n"]["schema"]
    assert (label["minimum"], label["maximum"]) == (0, SPEC.num_classes - 1)
    assert (n["minimum"], n["maximum"], n["default"]) == (1, make_settings().max_n, 1)
    assert by_name["truncation"]["schema"]["exclusiveMinimum"] == 0
    assert by_name["format"]["schema"]["$ref"] == "#/components/schemas/Format"
    assert "Format" in client.get("/openapi.json").json()["components"]["schemas"]


def test_v1_generate_one_image_per_label(client):
    labels = [0, 1, 2, 9, 9]
    images = npy(client.post("/v1/generate", json={"labels": labels, "seed": 40, "format": "npy"}))
    assert images.shape == expected_shape(len(labels))
    for i, label in enumerate(labels):  # image i: label labels[i], seed 40 + i
        single = npy(client.post("/generate", params={"label": label, "seed": 40 + i, "format": "npy"}))
        np.testing.assert_array_equal(images[i], single[0])


def test_v1_generate_same_latent_under_every_label(client):
    labels = list(range(SPEC.num_classes))
    images = npy(
        client.post("/v1/generate", json={"labels": labels, "seed": 6, "same_latent": True, "format": "npy"})
    )
    for label in (0, SPEC.num_classes - 1):
        single = npy(client.post("/generate", params={"label": label, "seed": 6, "format": "npy"}))
        np.testing.assert_array_equal(images[label], single[0])


def test_v1_generate_png_grid_with_columns(client):
    response = client.post(
        "/v1/generate", json={"labels": [1, 2, 3, 4], "seed": 0, "columns": 4, "format": "png"}
    )
    padding = make_settings().grid_padding
    assert Image.open(io.BytesIO(response.content)).size == (4 * W + 3 * padding, H)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"labels": []}, ["body", "labels"]),
        ({"labels": [0, SPEC.num_classes]}, ["body", "labels", 1]),
        ({"labels": [0] * 1025}, ["body", "labels"]),
        ({"labels": [0], "seed": -5}, ["body", "seed"]),
        ({"labels": [0], "truncation": 2}, ["body", "truncation"]),
        ({"labels": [0], "colour": "red"}, ["body", "colour"]),
        ({"labels": [0], "columns": 0}, ["body", "columns"]),
    ],
)
def test_v1_generate_errors_name_the_field(client, body, loc):
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422
    assert loc in [e["loc"] for e in response.json()["detail"]]


INLINE_CASES = [
    ("/generate", {"params": {"label": 3, "seed": 11}}),
    ("/generate", {"params": {"label": 4, "seed": 12, "n": 6}}),
    ("/generate", {"params": {"label": 5, "seed": 13, "n": 3, "format": "npy"}}),
    ("/v1/generate", {"json": {"labels": [1, 2], "seed": 14, "format": "json"}}),
]


def test_inline_and_thread_pool_work_give_the_same_bytes(monkeypatch):
    import service.routes.common as common

    hops: list[str] = []
    real_hop = common.run_in_threadpool

    async def counting_hop(func, *args):
        hops.append(getattr(func, "__name__", "?"))
        return await real_hop(func, *args)

    monkeypatch.setattr(common, "run_in_threadpool", counting_hop)
    answers, hop_counts = {}, {}
    for inline in (0, 1024):
        hops.clear()
        with serve_in_process(make_settings(inline_max_images=inline)) as client:
            responses = [client.post(path, **kwargs) for path, kwargs in INLINE_CASES]
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        answers[inline] = [(r.headers["content-type"], r.headers["X-Seed"], r.content) for r in responses]
        hop_counts[inline] = len(hops)
    assert answers[0] == answers[1024]
    assert hop_counts == {0: 2 * len(INLINE_CASES), 1024: 0}  # latents + encoding per request, or none


@pytest.mark.parametrize(
    ("route", "body", "loc", "allowed"),
    [
        # bounds the settings add to a body field's own: both ends, not the field's lower one alone
        ("/v1/bulk", {"n": 0}, ["body", "n"], "1 <= n <= 1000000"),
        ("/v1/bulk", {"counts": {"3": -1}}, ["body", "counts", "3"], "0 <= counts.3 <= 1000000"),
        ("/v1/generate", {"labels": []}, ["body", "labels"], "1 to 1024 item(s)"),
        # a field the body does not have: the ones it has
        (
            "/v1/generate",
            {"labels": [1], "colour": "red"},
            ["body", "colour"],
            "one of the fields labels, seed, same_latent, truncation, format, columns",
        ),
        # an item of a list: its own range, not the list's
        ("/v1/generate", {"labels": [10]}, ["body", "labels", 0], f"0 <= labels.0 <= {SPEC.num_classes - 1}"),
        (
            "/v1/arithmetic",
            {"terms": [{"seeds": [-1], "weight": 1}]},
            ["body", "terms", 0, "seeds", 0],
            f"0 <= terms.0.seeds.0 <= {latents.MAX_SEED}",
        ),
    ],
)
def test_body_errors_give_the_whole_range(client, route, body, loc, allowed):
    response = client.post(route, json=body)
    assert response.status_code == 422, response.text
    [error] = [e for e in response.json()["detail"] if e["loc"] == loc]
    assert error["allowed"] == allowed

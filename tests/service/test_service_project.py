"""Projection and editing (``/v1/project``, ``/v1/edit``) through the real app with the shipped generator and
encoder, the client's methods, and bad images: not images, bombs, over-size, unknown labels, no encoder."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from service_support import MODEL_DIR, make_settings, serve_in_process
from test_service_ops import metric_value

from contracts import latents
from service.client import GanClient, ServiceError
from service.image_input import MAX_PIXELS
from service.model_repo import load_model_dir

SPEC = load_model_dir(MODEL_DIR)
K = SPEC.num_classes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(image: np.ndarray | Image.Image) -> bytes:
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.fixture(scope="module")
def digits(client) -> np.ndarray:
    """Generated digits 0..K-1 (seed 5): images whose latents and labels are known."""
    images = []
    for label in range(K):
        response = client.post("/generate", params={"label": label, "seed": 5, "format": "npy"})
        assert response.status_code == 200, response.text
        images.append(np.load(io.BytesIO(response.content))[0])
    return np.stack(images)


def test_the_shipped_model_has_an_encoder():
    assert SPEC.encoder is not None and SPEC.encoder.path.name == "encoder.onnx"


def test_project_finds_a_latent_that_reconstructs_a_generated_digit(client, digits):
    for label in (3, 7):
        response = client.post("/v1/project", json={"image": b64(npy(digits[label])), "label": label})
        assert response.status_code == 200, response.text
        found = response.json()
        assert found["label"] == label and found["label_chosen"] is False and "errors" not in found
        assert len(found["latent"]) == SPEC.latent_dim
        reconstruction = decode(found["reconstruction"])
        assert reconstruction.shape == SPEC.image_shape[:2]
        error = np.mean(np.square((reconstruction.astype(np.float32) - digits[label]) / 255))
        assert found["error"] == pytest.approx(error, rel=1e-5)
        assert found["error"] < 0.05  # an all-black guess is ~0.1 for MNIST digits
        np.testing.assert_array_equal(decode(found["image"]), digits[label])


def test_without_a_label_the_closest_reconstruction_chooses_it(client, digits):
    right = 0
    for label in range(K):
        found = client.post("/v1/project", json={"image": b64(png(digits[label]))}).json()
        assert found["label_chosen"] is True and len(found["errors"]) == K
        assert found["error"] == min(found["errors"]) == found["errors"][found["label"]]
        right += found["label"] == label
    assert right >= K - 2, f"{right} of {K} labels chosen right on generated digits"


def test_other_sizes_and_colours_are_converted_by_the_documented_rule(client, digits):
    big = Image.fromarray(digits[2]).resize((56, 84)).convert("RGBA")
    found = client.post("/v1/project", json={"image": b64(png(big)), "label": 2})
    assert found.status_code == 200, found.text
    want = np.asarray(big.convert("L").resize((28, 28), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(decode(found.json()["image"]), want)
    for array in (digits[2][None], digits[2][:, :, None], np.repeat(digits[2][:, :, None], 3, axis=2)):
        response = client.post("/v1/project", json={"image": b64(npy(array)), "label": 2})
        assert response.status_code == 200, (array.shape, response.text)


def test_restyle_renders_the_same_latent_under_every_label(client, digits):
    body = {"image": b64(npy(digits[4])), "label": 4}
    latent = client.post("/v1/project", json=body).json()["latent"]
    images = np.load(io.BytesIO(client.post("/v1/edit", json={**body, "format": "npy"}).content))
    assert images.shape == (K, *SPEC.image_shape[:2])
    payload = client.post("/v1/edit", json={**body, "format": "json", "labels": [1, 8]}).json()
    assert [row["label"] for row in payload["images"]] == [1, 8]
    assert payload["images"][0]["latent"] == pytest.approx(latent)
    np.testing.assert_array_equal(decode(payload["images"][1]["png"]), images[8])
    grid = client.post("/v1/edit", json=body)
    assert grid.headers["content-type"] == "image/png" and grid.content.startswith(b"\x89PNG")


def test_interpolation_between_two_real_images(client, digits):
    body = {"image": b64(npy(digits[1])), "end_image": b64(npy(digits[6])), "mode": "interpolate", "steps": 5}
    payload = client.post("/v1/edit", json={**body, "format": "json"}).json()
    assert payload["count"] == 5
    weights = [row["label_weights"] for row in payload["images"]]  # different labels: morphed
    assert weights[0][1] == 1.0 and weights[-1][6] == 1.0
    same = {**body, "end_image": b64(npy(digits[1])), "label": 1, "end_label": 1, "format": "npy"}
    strip = np.load(io.BytesIO(client.post("/v1/edit", json=same).content))
    assert strip.shape == (5, *SPEC.image_shape[:2]) and (strip == strip[0]).all()  # same image: no walk


def test_lookalikes_are_seeded(client, digits):
    body = {
        "image": b64(npy(digits[9])),
        "label": 9,
        "mode": "lookalikes",
        "n": 4,
        "seed": 11,
        "format": "npy",
    }
    first, again = client.post("/v1/edit", json=body), client.post("/v1/edit", json=body)
    assert first.headers["X-Seed"] == "11" and first.content == again.content
    payload = client.post("/v1/edit", json={**body, "format": "json", "spread": 0.25}).json()
    latent = np.asarray(
        client.post("/v1/project", json={"image": body["image"], "label": 9}).json()["latent"]
    )
    offset = latents.latent_for_seed(12, SPEC.latent_dim) * np.float32(0.25)
    np.testing.assert_allclose(payload["images"][1]["latent"], latent + offset, rtol=1e-5, atol=1e-6)
    assert client.post("/v1/edit", json={**body, "seed": None}).headers["X-Seed"].isdigit()
    past = client.post("/v1/edit", json={**body, "seed": latents.MAX_SEED - 2})  # look-alike 3: 2**32
    assert past.status_code == 422 and past.json()["detail"][0]["loc"] == ["body", "seed"], past.text


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels, over a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("image", "status", "says"),
    [
        ("not base64!", 422, "not base64"),
        (b64(b"GIF89a not a png"), 422, "neither a PNG nor .npy"),
        (b64(png(np.zeros((28, 28), np.uint8))[:40]), 422, "not a readable PNG"),
        (b64(npy(np.zeros((28, 28), np.float32))), 422, "float32"),
        (b64(npy(np.zeros((2, 28, 28), np.uint8))), 422, "[2, 28, 28]"),
        (b64(b"\x93NUMPY\x01\x00\x10\x00{'descr': '|O'}   \n"), 422, ".npy"),
        (b64(npy(np.zeros((1100, 1100), np.uint8))[:256]), 413, "1100x1100"),  # the header is enough
        (b64(bomb_png(2000, 2000)), 413, "2000x2000"),
        (b64(bomb_png(200_000, 200_000)), 413, "more than"),
    ],
)
def test_bad_images_are_refused_naming_the_field(client, image, status, says):
    response = client.post("/v1/project", json={"image": image, "label": 1})
    assert response.status_code == status, response.text
    assert says in response.json()["error"] and "image" in response.json()["error"]


def test_bad_labels_and_fields_name_the_field(client, digits):
    image = b64(npy(digits[0]))
    cases = [
        ("/v1/project", {"image": image, "label": K}, "label"),
        ("/v1/project", {"image": image, "label": -1}, "label"),
        ("/v1/project", {"image": image, "colour": 1}, "colour"),
        ("/v1/edit", {"image": image, "labels": [0, K]}, "labels.1"),
        ("/v1/edit", {"image": image, "mode": "interpolate"}, "end_image"),
        (
            "/v1/edit",
            {"image": image, "mode": "interpolate", "end_image": image, "end_label": K},
            "end_label",
        ),
        ("/v1/edit", {"image": image, "end_label": 1}, "end_label"),
        ("/v1/edit", {"image": image, "mode": "swap"}, "mode"),
    ]
    for path, body, field in cases:
        response = client.post(path, json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.json()["error"], (field, response.json()["error"])


# a field of each mode, as a client would send it (a field's default value counts: it was sent)
OTHER_MODES = {
    "restyle": {"labels": [1]},
    "interpolate": {"end_label": 1, "steps": 8, "method": "lerp"},  # end_image: see below
    "lookalikes": {"n": 3, "spread": 0.5, "seed": 7},
}


@pytest.mark.parametrize("mode", sorted(OTHER_MODES))
def test_edit_refuses_each_field_of_another_mode_naming_it(client, digits, mode):
    image = b64(npy(digits[0]))
    body = {"image": image, "mode": mode} | ({"end_image": image} if mode == "interpolate" else {})
    others = {
        field: (owner, value)
        for owner, fields in OTHER_MODES.items()
        if owner != mode
        for field, value in fields.items()
    }
    if mode != "interpolate":
        others["end_image"] = ("interpolate", image)
    for field, (owner, value) in others.items():
        response = client.post("/v1/edit", json={**body, field: value})
        assert response.status_code == 422, (mode, field, response.text[:200])
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", field] and error["type"] == "value_error", error
        assert f"mode {mode!r}" in error["msg"] and f"mode {owner!r}" in error["allowed"], error
        assert response.json()["error"].startswith(f"{field}: "), response.json()["error"]
    both = client.post("/v1/edit", json={**body, **{f: v for f, (_, v) in others.items()}}).json()
    assert sorted(e["loc"][1] for e in both["detail"]) == sorted(others)  # all at once, not one per try
    if mode != "restyle":  # without mode: restyle, the default
        response = client.post("/v1/edit", json={"image": image, **OTHER_MODES[mode]})
        assert response.status_code == 422 and "mode 'restyle'" in response.json()["error"]


def test_edit_takes_each_modes_own_fields_and_nulls(client, digits):
    image = b64(npy(digits[0]))
    bodies = [
        {"mode": "restyle", "labels": None},
        {"mode": "restyle", "labels": [2], "seed": None, "end_image": None, "end_label": None},
        {"mode": "interpolate", "end_image": image, "end_label": None, "steps": 3, "method": "lerp"},
        {"mode": "lookalikes", "n": 2, "spread": 0.5, "seed": None, "labels": None},
    ]
    for body in bodies:
        response = client.post("/v1/edit", json={"image": image, "format": "npy", **body})
        assert response.status_code == 200, (body, response.text)


def test_the_schema_states_the_bounds_the_server_enforces():
    settings = make_settings(max_steps=16, max_n=2048)
    with serve_in_process(settings) as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        edit = schemas["EditRequest"]["properties"]
        assert edit["steps"]["maximum"] == 16 and edit["n"]["maximum"] == 2048
        assert edit["labels"]["anyOf"][0]["maxItems"] == 2048
        for properties, name in (
            (edit, "image"),
            (edit, "end_image"),
            (schemas["ProjectRequest"]["properties"], "image"),
        ):
            value = properties[name]["anyOf"][0] if "anyOf" in properties[name] else properties[name]
            assert value["maxLength"] == 4 * MAX_PIXELS, (name, properties[name])
        image = b64(npy(np.zeros((28, 28), np.uint8)))
        too_many = client.post("/v1/edit", json={"image": image, "mode": "lookalikes", "n": 2049})
        assert too_many.status_code == 422
        assert too_many.json()["error"] == "n: n is 2049, out of range (allowed: 1 <= n <= 2048)"
        steps = {"image": image, "mode": "interpolate", "end_image": image, "steps": 17}
        assert "2 <= steps <= 16" in client.post("/v1/edit", json=steps).json()["error"]
        labels = client.post("/v1/edit", json={"image": image, "labels": [0] * 2049})
        assert labels.status_code == 422 and "at most 2048" in labels.json()["error"]


def test_a_missing_or_over_long_image_names_the_field(client):
    for path in ("/v1/project", "/v1/edit"):
        missing = client.post(path, json={})
        assert missing.status_code == 422
        assert missing.json()["error"] == "image: Field required", missing.json()  # no size bound to confuse
    long = "A" * (4 * MAX_PIXELS + 4)
    small = b64(npy(np.zeros((28, 28), np.uint8)))
    with serve_in_process(make_settings(max_body_bytes=8 << 20)) as roomy:  # the body bound comes later
        for path, body, field in (
            ("/v1/project", {"image": long}, "image"),
            ("/v1/edit", {"image": long}, "image"),
            ("/v1/edit", {"image": small, "mode": "interpolate", "end_image": long}, "end_image"),
        ):
            response = roomy.post(path, json=body)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error.startswith(f"{field}: {field} is {len(long)} characters"), error
            assert f"at most {4 * MAX_PIXELS} characters" in error, error


@pytest.mark.parametrize(
    "shape",
    [(0, 0), (0, 0, 1), (1, 0, 0), (1, 0, 0, 1), (28, 0), (0, 28), (0, 28, 28)],
    ids=lambda shape: "x".join(map(str, shape)),
)
def test_an_empty_image_is_refused(client, digits, shape):
    empty = b64(npy(np.zeros(shape, np.uint8)))
    response = client.post("/v1/project", json={"image": empty, "label": 1})
    assert response.status_code == 422, (shape, response.text[:200])
    error = response.json()["error"]
    assert error.startswith("image: ") and ("empty" in error or str(list(shape)) in error), error
    if "empty" in error:
        assert f"{SPEC.image_shape[1]}x{SPEC.image_shape[0]}" in error  # the model's size
    body = {"image": b64(npy(digits[0])), "mode": "interpolate", "end_image": empty}
    response = client.post("/v1/edit", json=body)
    assert response.status_code == 422 and response.json()["error"].startswith("end_image: ")


def test_only_images_delivered_to_the_caller_are_counted(client, digits):
    def images() -> float:
        text = client.get("/metrics").text
        return sum(
            metric_value(text, "gan_images_generated_total", lane=lane) for lane in ("interactive", "bulk")
        )

    image = b64(npy(digits[3]))
    calls = [
        ("/v1/project", {"image": image}, 1),  # one reconstruction, whatever the K labels tried
        ("/v1/project", {"image": image, "label": 3}, 1),
        ("/v1/edit", {"image": image, "labels": [1, 8]}, 2),
        ("/v1/edit", {"image": image, "mode": "lookalikes", "n": 3}, 3),
        ("/v1/edit", {"image": image, "mode": "interpolate", "end_image": image, "steps": 4}, 4),
    ]
    for path, body, delivered in calls:
        before = images()
        assert client.post(path, json=body).status_code == 200
        assert images() - before == delivered, (path, body)


def test_a_body_over_the_size_bound_is_413(digits):
    with serve_in_process(make_settings(max_body_bytes=4096)) as small:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
        response = small.post("/v1/project", json={"image": b64(png(image))})
        assert response.status_code == 413


def test_a_model_without_an_encoder_answers_501(model_copy, digits):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest.pop("encoder", None)
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    (model_copy / "encoder.onnx").unlink(missing_ok=True)
    with serve_in_process(make_settings(model_dir=model_copy)) as client:
        for path in ("/v1/project", "/v1/edit"):
            response = client.post(path, json={"image": b64(npy(digits[0]))})
            assert response.status_code == 501 and "no encoder" in response.json()["error"]
        assert client.post("/generate", params={"label": 1}).status_code == 200


def test_the_client_projects_and_edits(client, digits, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(png(digits[5]))
    with GanClient("http://testserver", transport=client._transport, retries=0) as gan:
        found = gan.project(path)
        assert found["label"] == 5 and found["label_chosen"]
        assert gan.project(digits[5], label=5)["error"] == pytest.approx(found["error"])
        assert gan.edit(path, 5).array().shape == (K, *SPEC.image_shape[:2])
        strip = gan.edit(digits[5], 5, mode="interpolate", end_image=digits[3], steps=4)
        assert strip.array().shape[0] == 4
        looks = gan.edit(digits[5], 5, mode="lookalikes", n=3)
        assert looks.seed is not None and looks.array().shape[0] == 3
        with pytest.raises(ServiceError) as error:
            gan.project(b"nonsense")
        assert error.value.status == 422 and "image" in error.value.message


def test_with_a_remote_backend_the_encoder_is_not_loaded():
    spec = load_model_dir(MODEL_DIR, local=False)  # GAN_INFERENCE_URL: the front end reads manifest.json only
    assert spec.encoder is None and spec.manifest.encoder is not None  # the routes answer 501 saying why

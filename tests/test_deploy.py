"""``deploy/`` (kustomize): every manifest is valid against the Kubernetes schemas (offline, with
kubernetes-validate), and what it says agrees with the service: probes on the real endpoints, env names
that are real settings, a grace period that covers drain + shutdown. The overlays' patches are merged here
the way kustomize merges them (the GPU overlay's name suffix and labels are not applied). The two-tier
overlay's front end calls its Triton Service, serving the repository `gan-export --triton-repo` writes."""

from __future__ import annotations

import copy
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from export.triton import CONFIG_FILE, write_triton_repo
from service.config import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KUBERNETES_VERSION = "1.31.0"
SETTINGS_ENV = {f"GAN_{name.upper()}" for name in Settings.model_fields}


def _documents(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return [yaml.safe_load((directory / name).read_text()) for name in kustomization["resources"]]


def _merge_by_name(base: list[dict], patch: list[dict]) -> list[dict]:
    merged = {item["name"]: item for item in copy.deepcopy(base)}
    for item in patch:
        merged[item["name"]] = _merge(merged.get(item["name"], {}), item)
    return list(merged.values())


def _merge(base: object, patch: object) -> object:
    """Strategic merge as kustomize does it for these fields: maps deep, named lists by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {key: _merge(base.get(key), value) for key, value in patch.items()} | {
            key: value for key, value in base.items() if key not in patch
        }
    if isinstance(base, list) and isinstance(patch, list) and all("name" in item for item in base + patch):
        return _merge_by_name(base, patch)
    return copy.deepcopy(patch)


def rendered(variant: str) -> list[dict]:
    base = _documents(DEPLOY / "base")
    if variant == "base":
        return base
    overlay = yaml.safe_load((DEPLOY / variant / "kustomization.yaml").read_text())
    patches = [yaml.safe_load((DEPLOY / variant / p["path"]).read_text()) for p in overlay["patches"]]
    own = [yaml.safe_load((DEPLOY / variant / r).read_text()) for r in overlay["resources"] if r != "../base"]
    out = []
    for document in base + own:
        for patch in patches:
            if (patch["kind"], patch["metadata"]["name"]) == (document["kind"], document["metadata"]["name"]):
                document = _merge(document, patch)
        out.append(document)
    return out


def deployment(variant: str, name: str = "gan-service") -> dict:
    return next(d for d in rendered(variant) if (d["kind"], d["metadata"]["name"]) == ("Deployment", name))


def container_env(variant: str) -> dict[str, str]:
    (container,) = deployment(variant)["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"]}


@pytest.mark.parametrize("variant", ["base", "gpu", "two-tier"])
def test_every_manifest_is_valid_kubernetes(variant: str) -> None:
    documents = rendered(variant)
    assert {d["kind"] for d in documents} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_an_invalid_manifest_is_caught() -> None:
    broken = deployment("base")
    broken["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "soon"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", ["base", "gpu", "two-tier"])
def test_the_pod_matches_the_service(variant: str) -> None:
    spec = deployment(variant)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = container_env(variant)
    assert set(env) <= SETTINGS_ENV, f"not settings: {set(env) - SETTINGS_ENV}"
    settings = Settings(_env_file=None, **{k[4:].lower(): v for k, v in env.items()})
    assert spec["terminationGracePeriodSeconds"] >= settings.drain_s + settings.shutdown_timeout_s
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["containerPort"] for p in container["ports"]} == {settings.port}
    assert settings.host == "0.0.0.0"  # reachable from outside the pod
    assert container["resources"]["requests"] and container["resources"]["limits"]
    limit = float(container["resources"]["limits"]["cpu"])
    assert settings.intra_op_threads * settings.workers <= limit  # no more threads than the CPU quota


def test_the_gpu_variant_asks_for_a_gpu_and_refuses_to_run_without_one() -> None:
    (container,) = deployment("gpu")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container_env("gpu")["GAN_DEVICE"] == "cuda"
    assert container["image"].endswith("gan-service-gpu:latest")
    assert (
        container["livenessProbe"]
        == deployment("base")["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    )


def test_prometheus_scrapes_the_metrics_endpoint() -> None:
    annotations = deployment("base")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"


def test_the_two_tier_front_end_calls_the_triton_service_that_serves_the_exported_repository(
    tmp_path,
) -> None:

    documents = rendered("two-tier")
    env = container_env("two-tier")
    settings = Settings(_env_file=None, **{k[4:].lower(): v for k, v in env.items()})
    url = urlsplit(settings.inference_url)
    service = next(d for d in documents if (d["kind"], d["metadata"]["name"]) == ("Service", url.hostname))
    triton = deployment("two-tier", "gan-triton")
    assert service["spec"]["selector"] == triton["spec"]["selector"]["matchLabels"]
    (http,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    pod = triton["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert {p["name"]: p["containerPort"] for p in server["ports"]}[http["targetPort"]] == 8000
    assert f"--http-port={url.port}" in server["args"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # the front end waits for Triton within its own startup probe's window
    front = deployment("two-tier")["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert settings.inference_start_timeout_s < front["periodSeconds"] * front["failureThreshold"]
    # Triton's repository: the config gan-export --triton-repo writes for the model the front end serves
    model = settings.inference_model or "mnist-cdcgan"
    written = write_triton_repo(DEPLOY.parent / "models" / "mnist-cdcgan", tmp_path, None) / CONFIG_FILE
    assert (DEPLOY / "two-tier" / CONFIG_FILE).read_text() == written.read_text()
    assert f'name: "{model}"' in written.read_text()
    (init,) = pod["initContainers"]
    assert init["image"] == deployment("base")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert f"/models/{model}" in init["args"][0] and "verified_graph" in init["args"][0]
    assert "--model-repository=/models" in server["args"]
    kustomization = yaml.safe_load((DEPLOY / "two-tier" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == generator["name"] and generator["files"] == [CONFIG_FILE]

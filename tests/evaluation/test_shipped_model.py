"""The shipped model's published quality is what gan-eval measures on it now, not a figure typed in."""

from __future__ import annotations

import json
import re

import pytest

from evaluation.evaluate import EvalSettings, evaluate_path
from tests.conftest import MODELS_DIR, REPO_ROOT

SHIPPED = MODELS_DIR / "mnist-cdcgan"


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads((SHIPPED / "manifest.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def measured(published: dict) -> dict:
    classifier = REPO_ROOT / published["classifier"]["dir"]  # recorded relative to the repository
    return evaluate_path(SHIPPED, EvalSettings(**published["settings"]), classifier_dir=classifier).result


def test_manifest_metrics_are_reproduced_by_gan_eval(published: dict, measured: dict):
    for key in ("label_accuracy", "fid", "precision", "recall"):
        assert measured["model"][key] == pytest.approx(published["model"][key], rel=1e-4, abs=1e-6), key
    for name, check in published["product_bar"]["checks"].items():
        now = measured["product_bar"]["checks"][name]
        assert now["passed"] == check["passed"], name
        if isinstance(check["value"], float):
            assert now["value"] == pytest.approx(check["value"], rel=1e-4), name
        else:
            assert now["value"] == check["value"], name


def test_readme_quotes_the_shipped_figures(published: dict):
    readme = (REPO_ROOT / "README.md").read_text()
    version = json.loads((SHIPPED / "manifest.json").read_text())["version"]
    row = re.search(rf"\| metric \| mnist-cdcgan {re.escape(version)} \|.*?\n\n", readme, re.S)
    assert row, f"README's quality table does not name mnist-cdcgan {version}"
    table = row.group(0)
    assert f"{published['model']['label_accuracy'] * 100:.2f}%" in table
    assert f"{published['model']['fid']:.3f}" in table
    assert f"{published['product_bar']['checks']['fid_ratio']['value']:.2f}×" in table

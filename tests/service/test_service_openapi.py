"""The OpenAPI document is part of the contract (../shared/api-contract.md): a refactor must not change it.

``snapshots/openapi.json`` is the document of the default settings serving the shipped model. A deliberate
change to the API regenerates it (``python tests/service/test_service_openapi.py``) in the same commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from service_support import MODEL_DIR

from service.config import Settings
from service.main import create_app

SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"


def current_document() -> dict:
    return create_app(Settings(_env_file=None, model_dir=MODEL_DIR)).openapi()


def test_the_openapi_document_is_unchanged(monkeypatch) -> None:
    for name in [n for n in os.environ if n.startswith("GAN_")]:
        monkeypatch.delenv(name)
    recorded = json.loads(SNAPSHOT.read_text())
    assert current_document() == recorded


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current_document(), indent=1, sort_keys=True))

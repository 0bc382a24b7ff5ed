"""``/docs`` and ``/redoc`` render without internet: every script and stylesheet they load is served by the
service itself (fastapi-offline's packaged assets), none from a CDN."""

from __future__ import annotations

import re

import pytest

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_only_local_assets(client, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assets = [url for url in ASSET.findall(html.text) if url.endswith((".js", ".css"))]
    assert assets, html.text
    for url in assets:
        assert url.startswith("/"), f"{page} loads {url} from outside the service"
        response = client.get(url)
        assert response.status_code == 200 and len(response.content) > 10_000, url
    assert "/openapi.json" in html.text


def test_the_openapi_document_the_docs_render_is_served(client) -> None:
    assert client.get("/openapi.json").json()["info"]["title"] == "GAN image generation"

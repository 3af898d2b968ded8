"""/docs and /redoc name no other host: every script, style and icon they load is served by
the service itself (ops/apidocs.py), and their Content-Security-Policy allows nothing else.
tests/browser renders both in a real browser with the network blocked."""

from __future__ import annotations

import re

import httpx
import pytest

from allotment.ops.apidocs import content_security_policy

ASSET = re.compile(r'(?:src|href)="([^"]+)"')
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_a_docs_page_loads_its_assets_from_the_service_only(
    client: httpx.AsyncClient, path: str
) -> None:
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in page.text
    policy = page.headers["content-security-policy"]
    assert policy == content_security_policy(page.text)
    assert "default-src 'none'" in policy and "http" not in policy
    assets = ASSET.findall(page.text)
    assert len(assets) >= 2  # the bundle and the icon, at least
    for url in assets:
        assert url.startswith("/static/apidocs/"), url
        served = await client.get(url)
        assert served.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert served.headers["content-type"].startswith(TYPES[suffix]), url
        assert len(served.content) > 0


async def test_swagger_ui_asks_no_public_validator(client: httpx.AsyncClient) -> None:
    assert '"validatorUrl": null' in (await client.get("/docs")).text


async def test_an_unknown_asset_is_a_problem_404(client: httpx.AsyncClient) -> None:
    missing = await client.get("/static/apidocs/swagger-ui/nothing.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    outside = await client.get("/static/apidocs/../apidocs.py")
    assert outside.status_code == 404


def test_the_policy_allows_the_pages_inline_script_by_its_hash() -> None:
    policy = content_security_policy("<script>go()</script><script src='/x.js'></script>")
    # sha256 of "go()", base64: the one inline script, and nothing for the external one.
    assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]{44}';", policy)
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]

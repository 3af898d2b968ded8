"""Portal links and signed-in browsers, through the API as a customer would get them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


async def portal_link(client: httpx.AsyncClient, headers: dict[str, str], key: str) -> str:
    """The path and query of a new one-time link for customer `key`."""
    response = await client.post(f"/v1/customers/{key}/portal-sessions", headers=headers)
    assert response.status_code == 201, response.text
    url = urlsplit(response.json()["url"])
    return f"{url.path}?{url.query}"


@asynccontextmanager
async def signed_in(
    app: Any, client: httpx.AsyncClient, headers: dict[str, str], key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of its own (its own cookies), signed in to `key`'s portal."""
    link = await portal_link(client, headers, key)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as browser:
        response = await browser.get(link)
        assert response.status_code == 303, response.text
        yield browser


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)

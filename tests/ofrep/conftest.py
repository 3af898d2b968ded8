"""OFREP fixtures: the protocol's own OpenAPI document as the judge of every response, and a
client that sends OFREP requests and has each answer checked against it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import yaml

SPEC_PATH = Path(__file__).with_name("ofrep-openapi.yaml")
SINGLE = "/ofrep/v1/evaluate/flags/{key}"
BULK = "/ofrep/v1/evaluate/flags"


def load_spec() -> dict[str, Any]:
    """The protocol's document (tests/ofrep/ofrep-openapi.yaml, kept verbatim), with one
    correction: `evaluationSuccess` picks its value's type with `oneOf` among types that
    overlap — `codeDefaultFlag` has no properties, so it matches every flag, and an integer
    is a float too — so by the letter of JSON Schema no success could ever validate. It is
    read as the authors meant it (ADR-0006: "one of these shapes"), i.e. as `anyOf`."""
    spec = yaml.safe_load(SPEC_PATH.read_text())
    success = spec["components"]["schemas"]["evaluationSuccess"]
    shapes = success["allOf"][1]
    shapes["anyOf"] = shapes.pop("oneOf")
    return spec


SPEC = load_spec()


def _validator(schema: dict[str, Any]) -> Any:
    root = {**copy.deepcopy(schema), "components": SPEC["components"]}
    return jsonschema_rs.Draft202012Validator(root)


def conforms(template: str, response: httpx.Response) -> None:
    """`response` is one the protocol documents for `template`: a status it lists, a body
    only where it defines one, matching its schema, and the headers it names."""
    operation = SPEC["paths"][template]["post"]
    status = str(response.status_code)
    assert status in operation["responses"], f"{status} is not an OFREP answer: {response.text}"
    documented = operation["responses"][status]
    content = documented.get("content")
    if content is None:
        assert response.content == b"", f"{status} must have no body: {response.text}"
    else:
        assert response.headers["content-type"].startswith("application/json")
        schema = content["application/json"]["schema"]
        errors = [e.message for e in _validator(schema).iter_errors(response.json())]
        assert not errors, (response.json(), errors)
    if status == "429":
        assert response.headers["retry-after"].isdigit(), response.headers
    if template == BULK and status == "200":
        assert response.headers.get("etag")


class Ofrep:
    """Sends OFREP requests through the app; every response is checked by `conforms`."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def flag(
        self,
        key: str,
        context: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        response = await self.client.post(
            f"/ofrep/v1/evaluate/flags/{key}",
            json=None if content is not None else {"context": context or {}},
            content=content,
            headers=self.headers if headers is None else headers,
        )
        conforms(SINGLE, response)
        return response

    async def bulk(
        self,
        context: dict[str, Any],
        *,
        etag: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(self.headers if headers is None else headers)
        if etag is not None:
            sent["If-None-Match"] = etag
        response = await self.client.post(BULK, json={"context": context}, headers=sent)
        conforms(BULK, response)
        return response


@pytest.fixture
def ofrep(client: httpx.AsyncClient, backend: dict[str, str]) -> Ofrep:
    """OFREP as a product backend calls it (a `check` key)."""
    return Ofrep(client, backend)

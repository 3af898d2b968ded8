"""The OpenAPI document as generated clients and `/docs` use it: the API key as a Bearer
security scheme on every operation behind a key, reason codes as an enum that matches what
checks answer and the docs list, clean schema names; and the behaviours it documents:
`ETag` on an idempotent replay, usage reads defaulting to the current billing period."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from allotment.check.reasons import REASONS
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import metered_document

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {"/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"}


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def test_every_operation_behind_a_key_declares_the_bearer_scheme(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in PUBLIC:
                assert "security" not in operation, (method, path)
            elif path.startswith("/ofrep/"):  # OFREP clients may also send X-API-Key
                assert operation.get("security") == [{"bearer": []}, {"apiKey": []}], path
            else:
                assert operation.get("security") == [{"bearer": []}], (method, path)


async def test_schema_names_are_clean(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    names = list(document["components"]["schemas"])
    # Letters and digits only: no module paths, no `PageRead_CustomerRead_` for generics.
    assert [n for n in names if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", n)] == []
    assert {"CustomerPage", "ContractPage", "SeatPage"} <= set(names)
    refs = re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document))
    assert set(refs) <= set(names)  # every reference resolves
    # The check's bodies (parsed by the fast path, not by FastAPI) are named too.
    for path, name in (("/v1/check", "CheckBody"), ("/v1/check/batch", "BatchBody")):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{name}"}


async def test_reason_codes_are_one_closed_set_in_code_docs_and_openapi(
    client: httpx.AsyncClient,
) -> None:
    enum = (await _document(client))["components"]["schemas"]["DecisionRead"]["properties"][
        "reason"
    ]["enum"]
    assert set(enum) == REASONS
    # Every reason code the check's code writes is in the set.
    written: set[str] = set()
    for source in (ROOT / "src/allotment/check").glob("*.py"):
        written |= set(re.findall(r'reason="([a-z_]+)"', source.read_text()))
        written |= set(re.findall(r'Verdict\(\s*(?:False|True),\s*"([a-z_]+)"', source.read_text()))
    assert written and written <= REASONS, written - REASONS
    # docs/check.md names every one.
    documented = set(re.findall(r"`([a-z_]+)`", (ROOT / "docs/check.md").read_text()))
    assert not REASONS - documented, REASONS - documented


async def test_an_idempotent_replay_carries_the_etag(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    keyed = {**admin, "Idempotency-Key": "create-contract"}
    body = {"plan": "team", "kind": "standard", "starts_at": "2026-11-01T00:00:00Z"}
    first = await client.post("/v1/customers/acme/contracts", json=body, headers=keyed)
    again = await client.post("/v1/customers/acme/contracts", json=body, headers=keyed)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["etag"] == first.headers["etag"] == '"1"'


async def test_usage_reads_default_to_the_current_billing_period(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    response = await client.get(
        "/v1/customers/acme/usage", params={"meter": "api_calls"}, headers=finance
    )
    assert response.status_code == 200, response.text
    read = response.json()
    assert datetime.fromisoformat(read["from"]) == start
    following = start.replace(month=start.month % 12 + 1, year=start.year + (start.month == 12))
    assert datetime.fromisoformat(read["to"]) == following


async def test_binary_content_mode_is_declared_for_generated_clients(
    client: httpx.AsyncClient,
) -> None:
    operation = (await _document(client))["paths"]["/v1/events"]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert {"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject"} <= headers


def _texts(node: Any, key: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [t for k, v in node.items() for t in _texts(v, k)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v, key)]
    return [(key, node)] if key in ("description", "summary") and isinstance(node, str) else []


async def test_no_description_holds_text_that_markdown_would_take_for_html(
    client: httpx.AsyncClient,
) -> None:
    """/docs and /redoc render descriptions as Markdown, where `customer:<key>` outside a code
    span loses its `<key>` as an unknown HTML tag."""
    document = await _document(client)
    bare = []
    for key, text in _texts(document):
        outside = re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
        bare += [(key, tag) for tag in re.findall(r"<[A-Za-z/][^>]*>", outside)]
    assert bare == []
    scheme = document["components"]["securitySchemes"]["bearer"]["description"]
    assert "`customer:{key}`" in scheme

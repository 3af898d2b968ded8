"""Schema fuzzing: every operation of /openapi.json, driven by schemathesis, as admin.

For each operation schemathesis generates requests from the OpenAPI document (valid ones and
deliberately invalid ones) and sends them in process, through the ASGI app; every response
must pass the checks below: never a 5xx, a status code the operation documents, the
content type it documents for that status, and a body that matches that status's schema
(errors are problem+json and their schema is documented once, in app.py).

The app under test is a second instance of `create_app` on the test database, because
schemathesis drives ASGI apps from its own event loop thread (it runs the app's lifespan
there); the session-scoped `app` fixture lives in pytest-asyncio's loop, and only seeds.
Seeded data (tests/factories/world.py) lets generated path parameters hit real resources:
a positive case swaps its path parameters for real ids about half the time.

Size: MAX_EXAMPLES per operation, derandomized (the same cases every run), no shrinking.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
import structlog
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from allotment.app import create_app
from allotment.config import Settings
from allotment.kit.clock import isoformat, utcnow
from tests.conftest import Stores
from tests.factories.world import World, build_world

# Per operation. More, or other cases than CI's fixed ones, to explore locally:
#   ALLOTMENT_FUZZ_EXAMPLES=200 ALLOTMENT_FUZZ_RANDOM=1 pytest tests/test_schema_fuzz.py
pytestmark = pytest.mark.fuzz  # `-m "not fuzz"` leaves it out of a quick local run

MAX_EXAMPLES = int(os.environ.get("ALLOTMENT_FUZZ_EXAMPLES", "25"))
DERANDOMIZE = not os.environ.get("ALLOTMENT_FUZZ_RANDOM")

# What a refusal of an invalid request may be (negative_data_rejection).
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428]
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
]


@pytest.fixture
async def world(app: Any, client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """Seeded through the session app; returns the admin headers and the ids to aim at."""
    built: World = await build_world(client, admin)
    spare = await client.post(
        "/v1/api-keys", json={"name": "spare", "scopes": ["check"]}, headers=admin
    )
    assert spare.status_code == 201, spare.text
    acme, globex = built["acme"], built["globex"]
    real = {
        "key": ["acme", "globex"],
        "contract_id": [acme.contract, globex.contract],
        "tenant": [acme.tenant, globex.tenant],
        "instance_id": [acme.instance, globex.instance],
        "session_id": [globex.session],
        "subject": [acme.seat_subject],
        "version": [built.policy_version],
        # Never the fuzzer's own key: revoking it would turn the rest of the run into 401s.
        "key_id": [spare.json()["id"]],
        # Query parameters that random strings hardly ever satisfy.
        "period": [utcnow().strftime("%Y-%m")],
        "meter": ["api_calls", "exports"],
        "fingerprint": ["acme-host-1", "globex-host-1"],  # the artifact's live instances
        "from": [utcnow().strftime("%Y-%m-01T00:00:00Z")],
        "to": [isoformat(utcnow() + timedelta(days=1))],
    }
    return {"headers": admin, "real": real}


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without stores (nothing of the lifespan runs).

    `create_app` configures logging; put back what was there, since this runs at collection."""
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return create_app(Settings(log_level="WARNING")).openapi()
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


CONFIG = SchemathesisConfig.from_dict(
    {
        # The key is sent on every case (`world["headers"]`); a generated Authorization
        # header (the bearer scheme the document declares) would only be overwritten by it.
        "generation": {
            "mode": "all",
            "deterministic": DERANDOMIZE,
            "with-security-parameters": False,
        },
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        # The coverage phase adds hundreds of boundary cases per operation; the fuzzing
        # phase with a fixed budget keeps the run within CI's time.
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "operations": [
            {
                # A batch of events is accepted as a whole and answers 200 with each bad
                # event rejected by index (docs/usage.md); the test checks those rejections.
                "include-path": "/v1/events",
                "include-method": "POST",
                "checks": {
                    "negative_data_rejection": {
                        "expected-statuses": [*REFUSALS, 200],
                    }
                },
            }
        ],
    }
)
schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)


@pytest.fixture(scope="module")
def fuzz_app(stores: Stores) -> Iterator[Any]:
    """The app schemathesis sends to: its lifespan starts on the first request, in
    schemathesis's event loop thread, and ends with the module."""
    application = create_app(stores.settings())
    yield application
    asgi.shutdown_lifespans()


def aim_at_real_resources(case: Any, real: dict[str, list[Any]]) -> None:
    """About half of the positive cases get real ids and values for their path and query
    parameters instead, chosen from the generated values (so a derandomized run stays the
    same run)."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return  # a negative case may be negative *because of* one of these parameters
    for parameters in (case.path_parameters, case.query):
        if not parameters:
            continue
        digest = hashlib.sha256(repr(sorted(parameters.items())).encode()).digest()
        if digest[0] % 2:
            continue
        for index, name in enumerate(sorted(parameters)):
            choices = real.get(name)
            if choices:
                parameters[name] = choices[digest[(index + 1) % len(digest)] % len(choices)]


@pytest.fixture
def statuses(request: pytest.FixtureRequest) -> Iterator[list[int]]:
    """The statuses one operation's examples got. A run where the API refused every request
    (a key that stopped working, a guard in the way) would check nothing but problem
    documents: it fails here instead."""
    seen: list[int] = []
    yield seen
    if os.environ.get("ALLOTMENT_FUZZ_REPORT"):
        print(f"\n{request.node.name}: {sorted(Counter(seen).items())}")
    assert seen, "no request was sent"
    assert any(status not in (401, 403) for status in seen), f"every request refused: {seen}"


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(
    case: Any, fuzz_app: Any, world: dict[str, Any], statuses: list[int]
) -> None:
    aim_at_real_resources(case, world["real"])
    response = case.call_and_validate(app=fuzz_app, headers=world["headers"])
    statuses.append(response.status_code)
    negative = case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE
    if negative and case.path == "/v1/events" and response.status_code == 200:
        assert response.json()["rejected"], "an invalid batch was accepted whole"


async def test_every_declared_request_media_type_gets_past_the_body_guard(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """The body guard (kit/middleware.py) refuses media types the API does not read with a
    415; none the document offers for a request body may be among them."""
    refused = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for media_type in operation.get("requestBody", {}).get("content", {}):
                url = re.sub(r"\{[^}]+\}", "x", path)
                headers = {**admin, "Content-Type": media_type}
                response = await client.request(method, url, content=b"{}", headers=headers)
                if response.status_code == 415:
                    refused.append(f"{method.upper()} {path} {media_type}")
    assert not refused, refused

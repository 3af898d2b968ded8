"""The OFREP routes through the app: features as boolean flags, limits as integer flags, every
error in the protocol's shape, bulk evaluation with ETags, and the same decision log and
metrics as /v1/check. Every response is checked against the protocol's OpenAPI document
(tests/ofrep/conftest.py: `conforms`)."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client import REGISTRY

from tests.factories.auth import create_key
from tests.factories.customers import create_customer
from tests.factories.seats import assign
from tests.ofrep.conftest import BULK, SINGLE, Ofrep, conforms

ACME = {"customer": "acme"}


async def _revoke(client: httpx.AsyncClient, admin: dict[str, str], feature: str) -> None:
    contract = (await client.get("/v1/customers/acme/contracts", headers=admin)).json()["items"][0]
    amended = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"overrides": [{"feature": feature, "action": "revoke", "reason": "abuse"}]},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert amended.status_code == 200, amended.text


async def test_an_entitled_feature_is_true_with_targeting_match(team: str, ofrep: Ofrep) -> None:
    response = await ofrep.flag("reports", {"targetingKey": "ann", **ACME})
    assert response.status_code == 200
    body = response.json()
    assert body["key"] == "reports" and body["value"] is True
    assert body["variant"] == "on" and body["reason"] == "TARGETING_MATCH"
    metadata = body["metadata"]
    assert metadata["reason"] == "ok" and metadata["policy_version"] == 1
    assert metadata["decision_id"].startswith("dec_") and metadata["stale"] is False


async def test_a_feature_outside_the_plan_is_false_and_disabled(team: str, ofrep: Ofrep) -> None:
    body = (await ofrep.flag("sso", ACME)).json()
    assert (body["value"], body["variant"], body["reason"]) == (False, "off", "DISABLED")
    assert body["metadata"]["reason"] == "feature_not_in_plan"


async def test_the_answer_is_the_check_answer(
    team: str, ofrep: Ofrep, client: httpx.AsyncClient, backend: dict[str, str]
) -> None:
    for feature in ("reports", "sso", "scim", "agent", "api", "priority_support"):
        check = await client.post("/v1/check", json={"feature": feature, **ACME}, headers=backend)
        flag = (await ofrep.flag(feature, ACME)).json()
        assert flag["value"] == check.json()["allowed"], feature
        assert flag["metadata"]["reason"] == check.json()["reason"], feature


async def test_an_unknown_flag_is_flag_not_found(team: str, ofrep: Ofrep) -> None:
    for key in ("teleport", "Not-A-Name", "teleport.limit", "reports.limit"):
        response = await ofrep.flag(key, ACME)
        assert response.status_code == 404, key
        assert response.json() == {
            "key": key,
            "errorCode": "FLAG_NOT_FOUND",
            "errorDetails": f"Flag '{key}' was not found",
        }


async def test_context_errors_are_the_protocols(team: str, ofrep: Ofrep) -> None:
    cases: list[tuple[Any, str]] = [
        ({}, "INVALID_CONTEXT"),  # no customer
        ({"targetingKey": "ann"}, "INVALID_CONTEXT"),
        ({"customer": "Not A Key"}, "INVALID_CONTEXT"),
        ({"customer": 7}, "INVALID_CONTEXT"),
        ({"customer": "acme", "targetingKey": 42}, "INVALID_CONTEXT"),
        ({"customer": "acme", "tenant": ["x"]}, "INVALID_CONTEXT"),
        ({"customer": "acme", "instance": "x" * 300}, "INVALID_CONTEXT"),
    ]
    for context, code in cases:
        response = await ofrep.flag("reports", context)
        assert response.status_code == 400, context
        assert response.json()["errorCode"] == code, context
        assert response.json()["errorDetails"], context
    for raw, code in (
        (b"{nope", "PARSE_ERROR"),
        (b"[1, 2]", "PARSE_ERROR"),
        (b'"context"', "PARSE_ERROR"),
        (b'{"context": 5}', "INVALID_CONTEXT"),
        (b'{"context": [1]}', "INVALID_CONTEXT"),
    ):
        headers = {**ofrep.headers, "Content-Type": "application/json"}
        response = await ofrep.flag("reports", content=raw, headers=headers)
        assert response.status_code == 400, raw
        assert response.json()["errorCode"] == code, raw


async def test_a_seat_feature_without_a_targeting_key_is_targeting_key_missing(
    team: str, ofrep: Ofrep, admin: dict[str, str]
) -> None:
    response = await ofrep.flag("editor", ACME)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "TARGETING_KEY_MISSING"
    assert (await ofrep.flag("editor", {"targetingKey": "ann", **ACME})).json()["value"] is False
    assert (await assign(ofrep.client, admin, "ann")).status_code == 201
    held = (await ofrep.flag("editor", {"targetingKey": "ann", **ACME})).json()
    assert held["value"] is True and held["reason"] == "TARGETING_MATCH"


async def test_the_rest_of_the_context_reaches_the_rules(
    client: httpx.AsyncClient, admin: dict[str, str], ofrep: Ofrep
) -> None:
    from tests.factories.contracts import create_contract
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    document = demo_document()
    document["rules"] = [
        {
            "feature": "reports",
            "when": "'beta' in context.tags",
            "reason": "beta_only",
        }
    ]
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    beta = (await ofrep.flag("reports", {**ACME, "tags": ["beta"]})).json()
    assert beta["value"] is True
    other = (await ofrep.flag("reports", {**ACME, "tags": []})).json()
    assert other["value"] is False
    assert other["metadata"]["reason"] == "rule_denied"
    assert other["metadata"]["rule_reason"] == "beta_only"


async def test_limits_are_integer_flags(team: str, ofrep: Ofrep) -> None:
    flags = {
        "api_calls.limit": 100000,
        "api_calls.remaining": 100000,
        "api.limit": 100000,  # the feature's meter
        "exports.limit": 1000,
        "editor.limit": 10,  # a seat feature: the seat pool
        "editor.remaining": 10,
        "agent.limit": 3,  # an instance feature: the instance pool
    }
    for key, value in flags.items():
        body = (await ofrep.flag(key, ACME)).json()
        assert body["value"] == value and isinstance(body["value"], int), (key, body)
        assert body["reason"] == "TARGETING_MATCH" and body["variant"] == "limited"


async def test_a_limit_not_in_force_defers_to_the_code_default(
    team: str, ofrep: Ofrep, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="initech")  # no contract
    body = (await ofrep.flag("api_calls.limit", {"customer": "initech"})).json()
    assert "value" not in body and body["variant"] == "not_in_force"  # not "unlimited"
    assert body["reason"] == "DISABLED" and body["metadata"]["reason"] == "no_active_contract"
    unknown = (await ofrep.flag("api_calls.limit", {"customer": "nobody"})).json()
    assert "value" not in unknown and unknown["variant"] == "not_in_force"
    assert unknown["metadata"]["reason"] == "customer_unknown"


async def test_a_limit_of_a_contract_not_in_force_has_no_value(
    ofrep: Ofrep, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from tests.factories.contracts import create_contract, days_from_now
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="acme")
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="acme", plan="team", starts_at=days_from_now(3))
    ended = await create_contract(client, admin, customer="globex", plan="team")
    terminated = await client.post(f"/v1/contracts/{ended['id']}/terminate", headers=admin)
    assert terminated.status_code == 200, terminated.text
    for customer, reason in (("acme", "contract_not_started"), ("globex", "contract_expired")):
        feature = (await ofrep.flag("reports", {"customer": customer})).json()
        assert feature["metadata"]["reason"] == reason  # what the check says
        for key in ("api_calls.limit", "api_calls.remaining", "editor.limit", "agent.limit"):
            body = (await ofrep.flag(key, {"customer": customer})).json()
            assert "value" not in body and body["variant"] == "not_in_force", (key, body)
            assert body["reason"] == "DISABLED" and body["metadata"]["reason"] == reason
        bulk = (await ofrep.bulk({"customer": customer, "targetingKey": "ann"})).json()
        limits = [f for f in bulk["flags"] if f["key"].endswith((".limit", ".remaining"))]
        assert limits and all("value" not in f for f in limits), limits
        assert {f["metadata"]["reason"] for f in limits} == {reason}


async def test_a_pool_the_plan_lacks_is_a_limit_of_zero(
    ofrep: Ofrep, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from tests.factories.contracts import create_contract
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="initech")
    await create_contract(client, admin, customer="initech", plan="starter")  # no instances
    for key in ("agent.limit", "agent.remaining"):
        body = (await ofrep.flag(key, {"customer": "initech"})).json()
        assert body["value"] == 0 and body["variant"] == "limited", body
        assert body["metadata"]["reason"] == "no_pool" and body["metadata"]["limit"] == 0
    assert (await ofrep.flag("editor.limit", {"customer": "initech"})).json()["value"] == 3
    meter = (await ofrep.flag("api_calls.limit", {"customer": "initech"})).json()
    assert "value" not in meter and meter["variant"] == "unlimited"  # no limit on the plan
    assert meter["metadata"]["reason"] == "unlimited"


async def test_auth_errors_have_no_body(
    team: str, ofrep: Ofrep, app: Any, finance: dict[str, str]
) -> None:
    for headers in ({}, {"Authorization": "Bearer alm_nope"}, {"X-API-Key": "alm_nope"}):
        response = await ofrep.flag("reports", ACME, headers=headers)
        assert response.status_code == 401 and response.content == b""
    response = await ofrep.flag("reports", ACME, headers=finance)
    assert response.status_code == 403 and response.content == b""
    key = (await create_key(app, scopes=["check"]))["Authorization"].removeprefix("Bearer ")
    by_header = await ofrep.flag("reports", ACME, headers={"X-API-Key": key})
    assert by_header.status_code == 200 and by_header.json()["value"] is True


async def test_a_customer_scoped_key_evaluates_its_own_customer_only(
    team: str, ofrep: Ofrep, app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_customer(client, admin, key="globex")
    own = await create_key(app, scopes=["customer:acme"])
    implied = await ofrep.flag("reports", {"targetingKey": "ann"}, headers=own)
    assert implied.status_code == 200 and implied.json()["value"] is True
    named = await ofrep.flag("reports", ACME, headers=own)
    assert named.status_code == 200
    other = await ofrep.flag("reports", {"customer": "globex"}, headers=own)
    assert other.status_code == 403 and other.content == b""
    bulk = await ofrep.bulk({"customer": "globex"}, headers=own)
    assert bulk.status_code == 403


async def test_an_oversized_body_is_a_parse_error_with_the_flag_key(
    team: str, ofrep: Ofrep
) -> None:
    too_big = b'{"context": {"customer": "acme", "x": "' + b"a" * 2_000_000 + b'"}}'
    headers = {**ofrep.headers, "Content-Type": "application/json"}
    response = await ofrep.flag("reports", content=too_big, headers=headers)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "PARSE_ERROR"
    assert response.json()["key"] == "reports"  # as every single-flag failure has
    bulk = await ofrep.client.post(BULK, content=too_big, headers=headers)
    conforms(BULK, bulk)
    assert bulk.status_code == 400 and "key" not in bulk.json()


async def test_bad_requests_never_get_problem_json(team: str, ofrep: Ofrep) -> None:
    client = ofrep.client
    # A body sent without a JSON Content-Type is still read (the protocol's body is JSON).
    plain = await client.post(
        "/ofrep/v1/evaluate/flags/reports",
        content=b'{"context": {"customer": "acme"}}',
        headers={**ofrep.headers, "Content-Type": "text/plain"},
    )
    assert plain.status_code == 200 and plain.json()["value"] is True
    wrong = await client.get("/ofrep/v1/evaluate/flags/reports", headers=ofrep.headers)
    assert wrong.status_code == 405 and wrong.json()["errorDetails"]
    assert wrong.headers["allow"] == "POST"


async def test_bulk_evaluates_every_feature_and_limit_with_an_etag(
    team: str, ofrep: Ofrep, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    first = await ofrep.bulk({"targetingKey": "ann", **ACME})
    assert first.status_code == 200
    flags = {flag["key"]: flag for flag in first.json()["flags"]}
    assert flags["reports"]["value"] is True and flags["sso"]["value"] is False
    assert flags["api_calls.limit"]["value"] == 100000
    assert flags["editor"]["value"] is False  # ann holds no seat
    assert first.json()["metadata"] == {"customer": "acme", "stale": False, "policy_version": 1}
    etag = first.headers["etag"]

    same = await ofrep.bulk({"targetingKey": "ann", **ACME}, etag=etag)
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    other_context = await ofrep.bulk({"targetingKey": "bob", **ACME}, etag=etag)
    assert other_context.status_code == 200 and other_context.headers["etag"] != etag

    await _revoke(client, admin, "reports")
    changed = await ofrep.bulk({"targetingKey": "ann", **ACME}, etag=etag)
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    revoked = next(f for f in changed.json()["flags"] if f["key"] == "reports")
    assert revoked["value"] is False and revoked["metadata"]["reason"] == "feature_not_in_plan"


async def test_bulk_without_a_targeting_key_reports_seat_features_as_failures(
    team: str, ofrep: Ofrep
) -> None:
    body = (await ofrep.bulk(ACME)).json()
    flags = {flag["key"]: flag for flag in body["flags"]}
    assert flags["editor"]["errorCode"] == "TARGETING_KEY_MISSING"
    assert flags["reports"]["value"] is True


async def test_bulk_errors_are_the_protocols(team: str, ofrep: Ofrep) -> None:
    response = await ofrep.bulk({"targetingKey": "ann"})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "INVALID_CONTEXT"
    assert (await ofrep.bulk(ACME, headers={})).status_code == 401


async def test_ofrep_decisions_are_logged_and_counted_as_checks_are(
    team: str, ofrep: Ofrep, app: Any, client: httpx.AsyncClient, finance: dict[str, str]
) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_denials = sample(
        "allotment_decisions_total", allowed="false", reason="feature_not_in_plan"
    )
    before_timed = sample("allotment_check_seconds_count", endpoint="ofrep")
    denied = (await ofrep.flag("sso", {"targetingKey": "ann", **ACME})).json()
    await app.state.checker.decisions.flush()
    logged = (await client.get("/v1/decisions", params=ACME, headers=finance)).json()["items"]
    (record,) = [r for r in logged if r["decision_id"] == denied["metadata"]["decision_id"]]
    ann = app.state.pseudonyms.of(ACME["customer"], "ann")  # logged by pseudonym
    assert record["feature"] == "sso" and record["subject"] == ann
    assert record["reason"] == "feature_not_in_plan" and record["allowed"] is False
    denials = sample("allotment_decisions_total", allowed="false", reason="feature_not_in_plan")
    assert denials == before_denials + 1
    assert sample("allotment_check_seconds_count", endpoint="ofrep") == before_timed + 1
    metrics = (await client.get("/metrics")).text
    route = 'route="/ofrep/v1/evaluate/flags/{key}"'
    assert f'allotment_request_seconds_count{{method="POST",{route}' in metrics


async def test_a_flag_the_policy_does_not_define_is_not_found_whoever_the_customer(
    team: str, ofrep: Ofrep, app: Any, monkeypatch: Any
) -> None:
    from allotment.check.snapshot import StoreUnavailable

    for customer in ("acme", "nobody"):
        response = await ofrep.flag("dark_mode", {"customer": customer})
        assert response.status_code == 404, (customer, response.text)
        assert response.json()["errorCode"] == "FLAG_NOT_FOUND"
    known = (await ofrep.flag("reports", {"customer": "nobody"})).json()
    assert known["value"] is False and known["metadata"]["reason"] == "customer_unknown"

    async def down(customer: str, now: Any) -> Any:
        raise StoreUnavailable("PostgreSQL is down")

    # An outage, and a customer nothing is cached of: the decision is on_outage's...
    monkeypatch.setattr(app.state.checker.snapshots, "get", down)
    outage = (await ofrep.flag("reports", {"customer": "uncached"})).json()
    assert outage["value"] is False and outage["metadata"]["reason"] == "outage_default"
    # ...but a flag the last known policy does not define is still not found.
    missing = await ofrep.flag("dark_mode", {"customer": "uncached"})
    assert missing.status_code == 404 and missing.json()["errorCode"] == "FLAG_NOT_FOUND"


async def test_cors_is_opt_in_and_answers_listed_origins_only(
    team: str, ofrep: Ofrep, stores: Any, backend: dict[str, str]
) -> None:
    from allotment.app import create_app

    origin = "https://app.example.test"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, content-type, if-none-match",
    }
    # Off by default: no CORS headers, a preflight is a 405 like any method but POST.
    off = await ofrep.client.options(BULK, headers=preflight)
    assert off.status_code == 405 and "access-control-allow-origin" not in off.headers

    cors_app = create_app(stores.settings(ofrep_cors_origins=[origin]))
    async with cors_app.router.lifespan_context(cors_app):
        transport = httpx.ASGITransport(app=cors_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for path in (BULK, "/ofrep/v1/evaluate/flags/reports"):
                answered = await http.options(path, headers=preflight)
                assert answered.status_code == 200, answered.text
                assert answered.headers["access-control-allow-origin"] == origin
                assert "POST" in answered.headers["access-control-allow-methods"]
                allowed = answered.headers["access-control-allow-headers"].lower()
                assert {"x-api-key", "content-type", "if-none-match"} <= {
                    h.strip() for h in allowed.split(",")
                }
            key = backend["Authorization"].removeprefix("Bearer ")
            sent = {"Origin": origin, "X-API-Key": key}
            bulk = await http.post(BULK, json={"context": ACME}, headers=sent)
            conforms(BULK, bulk)
            assert bulk.status_code == 200
            assert bulk.headers["access-control-allow-origin"] == origin
            assert "etag" in bulk.headers["access-control-expose-headers"].lower()
            denied = await http.post(BULK, json={"context": ACME}, headers={"Origin": origin})
            assert denied.status_code == 401  # errors carry it too, so the page can read them
            assert denied.headers["access-control-allow-origin"] == origin
            other = {**preflight, "Origin": "https://evil.example.test"}
            refused = await http.options(BULK, headers=other)
            assert "access-control-allow-origin" not in refused.headers
            elsewhere = await http.options("/v1/check", headers=preflight)
            assert "access-control-allow-origin" not in elsewhere.headers  # OFREP only


async def test_the_request_edges_docs_openfeature_describes(team: str, ofrep: Ofrep) -> None:
    client, url = ofrep.client, "/ofrep/v1/evaluate/flags/reports"
    body = b'{"context": {"customer": "acme"}}'
    # Content-Type is not checked (docs/openfeature.md, "The body"): none, text, a form.
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = dict(ofrep.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = await client.post(url, content=body, headers=headers)
        conforms(SINGLE, response)
        assert response.status_code == 200 and response.json()["value"] is True, content_type
    empty = await ofrep.flag("reports", content=b"", headers=ofrep.headers)
    assert empty.status_code == 400 and empty.json()["errorCode"] == "INVALID_CONTEXT"
    assert "customer" in empty.json()["errorDetails"]
    null = await ofrep.flag("reports", content=b'{"context": null}', headers=ofrep.headers)
    assert null.json()["errorDetails"] == "`context` must be an object"
    # Both headers: X-API-Key wins.
    bearer = ofrep.headers
    both = await ofrep.flag("reports", ACME, headers={**bearer, "X-API-Key": "alm_nope"})
    assert both.status_code == 401
    # A trailing slash is the single-flag route with the key "".
    slash = await ofrep.flag("", ACME)
    assert slash.status_code == 404 and slash.json()["key"] == ""

"""Every API call the SDK makes, built once here for both clients (no I/O).

Each function returns a `Call`: method, path, body, how to read the answer, and whether a
retry is safe (writes get their `Idempotency-Key` here, once per call).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from allotment_client._http import Call, parse_json, parse_nothing, parse_text
from allotment_client.models import Decision

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


def _segment(value: str) -> str:
    return quote(value, safe="")


def _check_body(
    customer: str,
    *,
    subject: str | None,
    instance: str | None,
    tenant: str | None,
    context: Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"customer": customer}
    if subject is not None:
        body["subject"] = subject
    if instance is not None:
        body["instance"] = instance
    if tenant is not None:
        body["tenant"] = tenant
    if context:
        body["context"] = dict(context)
    return body


def _decision(response: httpx.Response) -> Decision:
    return Decision.from_json(json.loads(response.content))


def _decisions(response: httpx.Response) -> list[Decision]:
    return [Decision.from_json(item) for item in json.loads(response.content)["decisions"]]


def check(
    customer: str,
    feature: str,
    *,
    subject: str | None = None,
    instance: str | None = None,
    tenant: str | None = None,
    context: Mapping[str, Any] | None = None,
    consume: int | None = None,
    idempotency_key: str | None = None,
) -> Call[Decision]:
    body = _check_body(customer, subject=subject, instance=instance, tenant=tenant, context=context)
    body["feature"] = feature
    if consume is None:
        return Call("POST", "/v1/check", _decision, json_body=body, safe=True)
    body["consume"] = consume
    return Call.write(
        "POST", "/v1/check", _decision, json_body=body, idempotency_key=idempotency_key
    )


def check_batch(
    customer: str,
    features: Sequence[str],
    *,
    subject: str | None = None,
    instance: str | None = None,
    tenant: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> Call[list[Decision]]:
    body = _check_body(customer, subject=subject, instance=instance, tenant=tenant, context=context)
    body["features"] = list(features)
    return Call("POST", "/v1/check/batch", _decisions, json_body=body, safe=True)


def entitlements(customer: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/customers/{_segment(customer)}/entitlements", parse_json, safe=True)


def assign_seat(
    customer: str,
    subject: str,
    *,
    type: str = "member",
    tenant: str | None = None,
    idempotency_key: str | None = None,
) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"subject": subject, "type": type}
    if tenant is not None:
        body["tenant"] = tenant
    return Call.write(
        "POST",
        f"/v1/customers/{_segment(customer)}/seats",
        parse_json,
        json_body=body,
        idempotency_key=idempotency_key,
    )


def release_seat(customer: str, subject: str) -> Call[None]:
    path = f"/v1/customers/{_segment(customer)}/seats/{_segment(subject)}"
    return Call("DELETE", path, parse_nothing)


def _page(path: str, limit: int | None, cursor: str | None) -> Call[dict[str, Any]]:
    params: dict[str, Any] = {}
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", path, parse_json, params=params or None, safe=True)


def list_seats(customer: str, *, limit: int | None, cursor: str | None) -> Call[dict[str, Any]]:
    return _page(f"/v1/customers/{_segment(customer)}/seats", limit, cursor)


def open_session(
    customer: str, subject: str, *, tenant: str | None = None, idempotency_key: str | None = None
) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"subject": subject}
    if tenant is not None:
        body["tenant"] = tenant
    return Call.write(
        "POST",
        f"/v1/customers/{_segment(customer)}/sessions",
        parse_json,
        json_body=body,
        idempotency_key=idempotency_key,
    )


def renew_session(session_id: str) -> Call[dict[str, Any]]:
    return Call.write("POST", f"/v1/sessions/{_segment(session_id)}/heartbeat", parse_json)


def close_session(session_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/sessions/{_segment(session_id)}", parse_nothing)


def register_instance(
    customer: str,
    fingerprint: str,
    *,
    kind: str,
    environment: str | None = None,
    tenant: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"fingerprint": fingerprint, "kind": kind}
    if environment is not None:
        body["environment"] = environment
    if tenant is not None:
        body["tenant"] = tenant
    if metadata:
        body["metadata"] = dict(metadata)
    return Call.write(
        "POST",
        f"/v1/customers/{_segment(customer)}/instances",
        parse_json,
        json_body=body,
        idempotency_key=idempotency_key,
    )


def renew_instance(instance_id: str) -> Call[dict[str, Any]]:
    return Call.write("POST", f"/v1/instances/{_segment(instance_id)}/heartbeat", parse_json)


def deregister_instance(instance_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/instances/{_segment(instance_id)}", parse_nothing)


def list_instances(customer: str, *, limit: int | None, cursor: str | None) -> Call[dict[str, Any]]:
    return _page(f"/v1/customers/{_segment(customer)}/instances", limit, cursor)


def send_events(events: Sequence[Mapping[str, Any]]) -> Call[dict[str, Any]]:
    """A batch of CloudEvents. Safe to repeat as it is: each event's (source, id) makes a
    second copy a duplicate, never a second count (docs/usage.md, "Exactly once")."""
    content = json.dumps(list(events), separators=(",", ":")).encode()
    headers = {"Content-Type": BATCH_CONTENT_TYPE}
    return Call("POST", "/v1/events", parse_json, content=content, headers=headers, safe=True)


def usage(
    customer: str,
    meter: str,
    *,
    start: str | None = None,
    end: str | None = None,
    granularity: str | None = None,
    tenant: str | None = None,
) -> Call[dict[str, Any]]:
    params: dict[str, Any] = {"meter": meter}
    for name, value in (("from", start), ("to", end), ("granularity", granularity)):
        if value is not None:
            params[name] = value
    if tenant is not None:
        params["tenant"] = tenant
    path = f"/v1/customers/{_segment(customer)}/usage"
    return Call("GET", path, parse_json, params=params, safe=True)


def artifact(customer: str, *, ttl: int | None = None, fingerprint: str | None = None) -> Call[str]:
    params: dict[str, Any] = {}
    if ttl is not None:
        params["ttl"] = ttl
    if fingerprint is not None:
        params["fingerprint"] = fingerprint
    path = f"/v1/customers/{_segment(customer)}/artifact"
    return Call("GET", path, parse_text, params=params or None, safe=True)


def jwks() -> Call[dict[str, Any]]:
    return Call("GET", "/.well-known/jwks.json", parse_json, safe=True)


def policy(version: int) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/policies/{version}", parse_json, safe=True)

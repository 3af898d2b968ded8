"""The pure OFREP mapping (allotment/ofrep/mapping.py): flag keys, the context split, error
bodies (429's Retry-After in whole seconds), the ETag, and the server's answer to an
outage (`ServiceUnavailable` → 429) — no app, no stores."""

from __future__ import annotations

import pytest

from allotment.errors import BadRequest, Forbidden, ServiceUnavailable, Unauthorized
from allotment.ofrep import mapping
from allotment.ofrep.fastpath import as_ofrep
from allotment.ofrep.mapping import OfrepError


def test_flag_keys_name_features_and_limits() -> None:
    assert mapping.flag("sso") == mapping.Flag("sso", "sso", "feature")
    assert mapping.flag("api_calls.limit") == mapping.Flag("api_calls.limit", "api_calls", "limit")
    assert mapping.flag("seats_x.remaining").kind == "remaining"
    for key in ("", "Sso", "a.b", ".limit", "x.limit.limit", "x" * 64):
        with pytest.raises(OfrepError) as raised:
            mapping.flag(key)
        assert raised.value.status == 404 and raised.value.code == "FLAG_NOT_FOUND"


def test_the_context_splits_into_the_check_and_the_rules_context() -> None:
    context = {"targetingKey": "ann", "customer": "acme", "tenant": "eu", "plan": "x", "n": 3}
    request = mapping.check_request(context, feature="sso", own_customers=None)
    assert (request.customer, request.subject, request.tenant) == ("acme", "ann", "eu")
    assert request.instance is None and request.feature == "sso"
    assert request.context == {"plan": "x", "n": 3}
    bare = mapping.check_request({"customer": "acme"}, feature="sso", own_customers=None)
    assert bare.context is None and bare.subject is None


def test_a_customer_scoped_key_defaults_to_and_is_held_to_its_customer() -> None:
    own = frozenset({"acme"})
    assert mapping.check_request({}, feature="f", own_customers=own).customer == "acme"
    with pytest.raises(OfrepError) as raised:
        mapping.check_request({"customer": "globex"}, feature="f", own_customers=own)
    assert raised.value.status == 403
    with pytest.raises(OfrepError) as missing:
        mapping.check_request({}, feature="f", own_customers=None)
    assert missing.value.code == "INVALID_CONTEXT"


def test_error_bodies_are_the_protocols() -> None:
    body, headers = mapping.error_body(OfrepError(429, "down", retry_after_s=2.2))
    assert body is None and headers == {"Retry-After": "3"}  # whole seconds, rounded up
    assert mapping.error_body(OfrepError(429, "down"))[1] == {"Retry-After": "1"}
    assert mapping.error_body(OfrepError(401, "no key"))[0] is None
    assert mapping.error_body(OfrepError(403, "no"))[0] is None
    assert mapping.error_body(OfrepError(500, "bug"))[0] == b'{"errorDetails":"bug"}'
    not_found = mapping.error_body(mapping.flag_not_found("x"))[0]
    assert (
        not_found
        == b'{"key":"x","errorCode":"FLAG_NOT_FOUND","errorDetails":"Flag \'x\' was not found"}'
    )


def test_service_errors_become_ofrep_statuses() -> None:
    assert as_ofrep(Unauthorized()).status == 401
    assert as_ofrep(Forbidden("no")).status == 403
    outage = as_ofrep(ServiceUnavailable("database down", retry_after=5))
    assert (outage.status, outage.retry_after_s) == (429, 5.0)
    other = as_ofrep(BadRequest("odd"), "sso")
    assert (other.status, other.code, other.key) == (400, "GENERAL", "sso")


def _flag(value: bool, decision_id: str) -> dict[str, object]:
    return {"key": "sso", "value": value, "metadata": {"decision_id": decision_id}}


def test_the_etag_moves_with_the_answer_not_with_decision_ids() -> None:
    def tag(**changes: object) -> str:
        fields: dict[str, object] = {
            "customer": "acme",
            "state_version": 4,
            "policy_version": 2,
            "context": {"targetingKey": "ann"},
            "flags": [_flag(True, "dec_1")],
        }
        fields.update(changes)
        return mapping.etag(**fields)  # type: ignore[arg-type]

    assert tag() == tag(flags=[_flag(True, "dec_2")])
    assert tag() != tag(flags=[_flag(False, "dec_1")])
    assert tag() != tag(state_version=5)
    assert tag() != tag(policy_version=3)
    assert tag() != tag(context={"targetingKey": "bob"})
    assert mapping.etag_matches(tag(), tag())
    assert mapping.etag_matches(f'W/{tag()}, "other"', tag())
    assert mapping.etag_matches("*", tag())
    assert not mapping.etag_matches('"other"', tag()) and not mapping.etag_matches(None, tag())

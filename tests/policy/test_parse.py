"""Parsing YAML and JSON policies, and loading them in one call."""

from __future__ import annotations

import json

import pytest
import yaml

from allotment.policy import PolicySyntaxError, UnsupportedPolicyMediaType, load, parse
from allotment.policy.paths import format_path
from tests.policy.documents import base


def test_yaml_and_json_of_one_document_parse_alike() -> None:
    document = base()
    as_yaml = yaml.safe_dump(document, sort_keys=False)
    assert parse(as_yaml, "application/yaml") == document
    assert parse(json.dumps(document).encode(), "application/json; charset=utf-8") == document
    assert parse(json.dumps(document), "application/merge-patch+json") == document


def test_yaml_syntax_error_is_one_error_at_the_root_with_its_line() -> None:
    result = load("currency: USD\nfeatures: [reports\n", "application/yaml")
    assert result.document is None
    assert len(result.errors) == 1
    assert result.errors[0]["path"] == "$"
    assert "line 3" in result.errors[0]["message"]


def test_json_syntax_error_carries_the_parser_message() -> None:
    with pytest.raises(PolicySyntaxError) as caught:
        parse('{"currency": "USD",}', "application/json")
    assert caught.value.errors[0]["path"] == "$"
    assert "line 1 column 20" in caught.value.errors[0]["message"]


@pytest.mark.parametrize(
    ("text", "media_type"),
    [
        ("plans:\n  team: {}\n  team: {}\n", "application/yaml"),
        ('{"plans": {"team": {}, "team": {}}}', "application/json"),
    ],
)
def test_duplicate_keys_are_errors_not_last_one_wins(text: str, media_type: str) -> None:
    result = load(text, media_type)
    assert result.errors[0]["path"] == "$"
    assert "duplicate key 'team'" in result.errors[0]["message"]


def test_yaml_merge_keys_may_override_what_they_merge() -> None:
    text = "seats: &seats {limit: 3, model: named}\nother:\n  <<: *seats\n  limit: 5\n"
    assert parse(text, "application/yaml") == {
        "seats": {"limit": 3, "model": "named"},
        "other": {"limit": 5, "model": "named"},
    }


def test_non_utf8_bytes() -> None:
    result = load(b"currency: \xff", "application/yaml")
    assert result.errors[0]["path"] == "$"
    assert "UTF-8" in result.errors[0]["message"]


def test_unsupported_media_type_is_its_own_error() -> None:
    with pytest.raises(UnsupportedPolicyMediaType):
        parse("currency = 'USD'", "application/toml")


def test_load_validates_after_parsing() -> None:
    result = load("currency: USD\nplans: {team: {features: [nope]}}\n", "text/yaml")
    assert result.errors == [
        {
            "path": "plans.team.features[0]",
            "message": "unknown feature 'nope': the document defines no features",
        }
    ]


@pytest.mark.parametrize(
    ("location", "path"),
    [
        ((), "$"),
        (("plans", "team", "seats", "burst", "window"), "plans.team.seats.burst.window"),
        (("rules", 0, "when"), "rules[0].when"),
        (("features", "Bad Name", "seat"), 'features["Bad Name"].seat'),
        (("features", "a.b"), 'features["a.b"]'),
    ],
)
def test_paths(location: tuple[str | int, ...], path: str) -> None:
    assert format_path(location) == path


def test_an_entry_with_nothing_after_it_is_an_empty_entry() -> None:
    text = "currency: USD\nfeatures:\n  reports:\nplans:\n  team:\n    features: [reports]\n"
    result = load(text, "application/yaml")
    assert result.errors == []
    assert result.document is not None
    assert result.document.features["reports"].on_outage == "deny"


def test_a_null_value_is_the_same_as_not_writing_it() -> None:
    text = "currency: USD\nmeters:\naddons:\nfeatures: {reports: {guests: null, on_outage: null}}\n"
    result = load(text, "application/yaml")
    assert result.errors == []
    assert result.document is not None and result.document.meters == {}


def test_a_key_yaml_reads_as_a_number_or_boolean_is_reported_quoted() -> None:
    result = load("currency: USD\nfeatures: {3: {}, yes: {}}\n", "application/yaml")
    paths = {error["path"]: error["message"] for error in result.errors}
    assert set(paths) == {'features["3"]', "features.true"}
    assert "quote it" in paths['features["3"]']

"""The broker's pure parts: Nats-Msg-Id names one (source, id); the server list, as
configured (refused at start when NATS could not take it) and as logs show it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from allotment.config import Settings
from allotment.usage.broker import message_id, redacted, servers


@settings(max_examples=50)
@given(
    st.tuples(st.text(min_size=1), st.text(min_size=1)),
    st.tuples(st.text(min_size=1), st.text(min_size=1)),
)
def test_two_pairs_share_a_message_id_only_when_equal(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    assert (message_id(a) == message_id(b)) == (a == b)


def test_a_slash_in_the_source_or_the_id_does_not_collide() -> None:
    assert message_id(("a/b", "c")) != message_id(("a", "b/c"))
    assert message_id(("https://gw.example/x", "evt-1")) == "https://gw.example/x/evt-1"


def test_servers_take_urls_or_bare_host_ports() -> None:
    assert servers("nats://a:4222, b:4223,") == ["nats://a:4222", "nats://b:4223"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not-a-url", "'not-a-url' is not a NATS server's URL (nats://host:port)"),
        ("http://nats.internal:4222", "http:// is not a NATS URL"),
        ("nats://a:4222,https://b:4222", "https:// is not a NATS URL"),
        ("nats://a:4222/path", "is not a NATS server's URL"),
        ("nats://a:port", "is not a NATS server's URL"),
        (",", "a nats://host:port URL (or several, comma-separated) is required"),
    ],
)
def test_a_broker_that_is_not_a_nats_url_is_refused_at_start(url: str, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(events_broker=url)
    assert says in str(refused.value)


def test_the_refusal_never_shows_a_password() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(events_broker="nats://user:s3cret@a:port")
    (error,) = refused.value.errors()
    assert "s3cret" not in error["msg"] and "'nats://a:port'" in error["msg"]


@pytest.mark.parametrize(
    "url", ["nats://a:4222", "tls://a:4222,tls://b:4222", "nats://a:4222, b:4223", "nats://a"]
)
def test_nats_and_tls_urls_are_taken(url: str) -> None:
    assert Settings(events_broker=url).events_broker == url


@pytest.mark.parametrize("name", ["my.events", "my events", "ev*", "ev>", "a/b", "a\\b", ""])
def test_a_stream_name_nats_refuses_is_refused_at_start(name: str) -> None:
    with pytest.raises(ValidationError, match="is not a NATS stream name"):
        Settings(events_stream=name)


def test_logs_show_the_servers_without_credentials() -> None:
    assert redacted("nats://u:pw@a:4222,tls://token@b:4223") == "nats://a:4222,tls://b:4223"

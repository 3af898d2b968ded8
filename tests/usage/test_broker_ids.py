"""The broker's pure parts: Nats-Msg-Id names one (source, id); the server list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.usage.broker import message_id, servers


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

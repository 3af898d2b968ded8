"""The retry schedule and the target checks (pure)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.webhooks import schedule, signature, targets

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@settings(max_examples=50)
@given(attempts=st.integers(1, 80), base=st.floats(0.1, 60), cap=st.floats(1, 86400))
def test_backoff_stays_within_full_jitter_bounds(attempts: int, base: float, cap: float) -> None:
    delay = schedule.backoff_s(attempts, base_s=base, cap_s=cap)
    assert 0.0 <= delay <= min(cap, base * 2 ** (attempts - 1))


def test_retries_stop_after_the_window() -> None:
    start = NOW - timedelta(hours=23, minutes=59, seconds=59)
    kwargs = {"base_s": 5.0, "cap_s": 7200.0, "window_s": 86400.0}
    assert schedule.next_attempt(now=NOW, attempts=1, window_start=NOW, **kwargs) is not None
    late = schedule.next_attempt(
        now=NOW, attempts=30, window_start=start, not_before=NOW + timedelta(seconds=2), **kwargs
    )
    assert late is None
    held = schedule.next_attempt(
        now=NOW, attempts=1, window_start=NOW, not_before=NOW + timedelta(minutes=10), **kwargs
    )
    assert held == NOW + timedelta(minutes=10)


def test_retry_after_reads_seconds_and_dates() -> None:
    assert schedule.retry_after_s("120", now=NOW) == 120
    assert schedule.retry_after_s("Fri, 04 Dec 2026 12:01:00 GMT", now=NOW) == 60
    assert schedule.retry_after_s("999999", now=NOW) == schedule.MAX_RETRY_AFTER_S
    assert schedule.retry_after_s("-5", now=NOW) == 0
    assert schedule.retry_after_s("soon", now=NOW) is None
    assert schedule.retry_after_s(None, now=NOW) is None


@pytest.mark.parametrize(
    "address,public",
    [
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("2606:4700::1111", True),
        ("100.64.0.1", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert targets.is_public(ipaddress.ip_address(address)) is public


def test_signature_matches_the_reference_library() -> None:
    from standardwebhooks import Webhook

    secret = signature.new_secret()
    body = '{"data":{},"timestamp":"2026-12-04T12:00:00.000000Z","type":"webhook.test"}'
    stamp = int(datetime.now(UTC).timestamp())
    headers = signature.headers("msg_1", stamp, body, [secret])
    assert Webhook(secret).verify(body, headers)["type"] == "webhook.test"
    assert headers["webhook-signature"] == Webhook(secret).sign(
        "msg_1", datetime.fromtimestamp(stamp, UTC), body
    )

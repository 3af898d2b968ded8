"""track() checks each event when it is tracked, as the service would read it: one it
could not read (NaN, Infinity, a value that is not JSON, a naive time, an empty type, a
customer that is not a key) is refused to the caller and never buffered, so it can never
block the events after it. What an older version spooled unreadable is refused, not
retried forever; a sender refused by the service backs off, and nothing kills it."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from allotment_client import Allotment, AsyncAllotment
from allotment_client.spool import Spool
from conftest import Service

IDS = "SELECT count(*) FROM usage_event_ids WHERE source = :source"
COUNTED = (
    "SELECT coalesce(sum(c.value), 0) FROM usage_counters c JOIN customers k "
    "ON k.id = c.customer_id WHERE k.key = :customer AND c.meter = 'api_calls'"
)


async def test_non_finite_numbers_are_refused_at_track_and_later_events_are_delivered(
    service: Service, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"sdk-{uuid.uuid4().hex[:8]}"

    def scenario() -> None:
        with Allotment(
            service.url, service.key, source=source, spool=tmp_path, flush_interval=0.05
        ) as sdk:
            sdk.track("api.call", customer=customer, data={"count": 1})
            for bad in (float("nan"), float("inf"), -float("inf"), Decimal("NaN")):
                with pytest.raises(ValueError, match="not a JSON number"):
                    sdk.track("api.call", customer=customer, data={"count": bad})
            with pytest.raises(ValueError, match="too large"):
                sdk.track("api.call", customer=customer, data={"count": 10**400})
            sdk.track("api.call", customer=customer, data={"count": 1})
            assert sdk.flush(30)
            queue = sdk._tracker.queue if sdk._tracker else None
            assert queue is not None and queue.sent == 2 and queue.refused_total == 0

    await asyncio.to_thread(scenario)
    assert await service.scalar(IDS, source=source) == 2
    assert await service.scalar(COUNTED, customer=customer) == 2


async def test_values_that_are_not_json_are_refused_at_track_and_decimals_sent_as_numbers(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"sdk-{uuid.uuid4().hex[:8]}"
    async with AsyncAllotment(
        service.url, service.key, source=source, spool=False, flush_interval=0.05
    ) as sdk:
        for bad in (datetime.now(UTC), uuid.uuid4(), {1, 2}, b"x", object()):
            with pytest.raises(TypeError, match="is not JSON"):
                sdk.track("api.call", customer=customer, data={"count": 1, "extra": bad})
        with pytest.raises(TypeError, match="no exact JSON number"):
            sdk.track("api.call", customer, {"count": Decimal("0.1000000000000000000001")})
        sdk.track("api.call", customer, {"count": Decimal("2")})
        sdk.track("api.call", customer, {"count": Decimal("1.5"), "ratio": Decimal("0.1")})
        assert await sdk.flush(30)
        queue = sdk._tracker.queue if sdk._tracker else None
        assert queue is not None and queue.sent == 2 and not queue.refused
        assert sdk._tracker is not None and sdk._tracker._task is not None
        assert not sdk._tracker._task.done()
    assert await service.scalar(IDS, source=source) == 2
    assert await service.scalar(COUNTED, customer=customer) == Decimal("3.5")  # 2 + 1.5, exactly


async def test_an_unreadable_event_spooled_by_an_older_version_is_refused_not_retried(
    service: Service, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"sdk-{uuid.uuid4().hex[:8]}"

    def event(n: int, count: float) -> dict[str, object]:
        return {
            "specversion": "1.0",
            "id": f"e-{n}",
            "source": source,
            "type": "api.call",
            "subject": customer,
            "data": {"count": count},
        }

    spool = Spool(tmp_path)  # as an older version wrote it: a bare NaN in the line
    spool.append([event(1, 1), event(2, float("nan")), event(3, 1)])
    spool.close()
    async with AsyncAllotment(
        service.url, service.key, source=source, spool=tmp_path, flush_interval=0.05
    ) as sdk:
        sdk.track("api.call", customer, {"count": 1})
        assert await sdk.flush(30)
        queue = sdk._tracker.queue if sdk._tracker else None
        assert queue is not None and queue.refused_total == 1
        assert [e["id"] for e, _ in queue.refused] == ["e-2"]
    assert await service.scalar(IDS, source=source) == 3
    spool = Spool(tmp_path)
    assert len(spool) == 0
    spool.close()


async def test_a_batch_answered_400_is_resent_one_by_one_and_only_the_bad_event_refused(
    service: Service, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"sdk-{uuid.uuid4().hex[:8]}"

    def event(n: int, count: int) -> dict[str, object]:
        return {
            "specversion": "1.0",
            "id": f"e-{n}",
            "source": source,
            "type": "api.call",
            "subject": customer,
            "data": {"count": count},
        }

    # Valid JSON that the service cannot read (an integer past a double: a 400 for the
    # whole batch), spooled by an older version between good events.
    spool = Spool(tmp_path)
    spool.append([event(1, 1), event(2, 10**400), event(3, 1), event(4, 1)])
    spool.close()
    async with AsyncAllotment(
        service.url, service.key, source=source, spool=tmp_path, flush_interval=0.05
    ) as sdk:
        sdk.track("api.call", customer, {"count": 1})
        assert await sdk.flush(30)
        queue = sdk._tracker.queue if sdk._tracker else None
        assert queue is not None and queue.refused_total == 1
        assert [(e["id"], why["status"]) for e, why in queue.refused] == [("e-2", 400)]
    assert await service.scalar(IDS, source=source) == 4
    assert await service.scalar(COUNTED, customer=customer) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"type": "", "customer": "acme"}, "type"),
        ({"type": "api.call", "customer": "Not Valid"}, "customer"),
        ({"type": "api.call", "customer": "acme", "time": datetime.now()}, "naive"),  # noqa: DTZ005
        ({"type": "api.call", "customer": "acme", "time": "yesterday"}, "time"),
        ({"type": "api.call", "customer": "acme", "time": "2026-11-29T10:00:00"}, "offset"),
        ({"type": "api.call", "customer": "acme", "tenant": ""}, "tenant"),
    ],
)
def test_events_the_service_would_refuse_are_refused_at_track(
    kwargs: dict[str, object], match: str
) -> None:
    with Allotment("http://127.0.0.1:9", "k", spool=False) as sdk:
        with pytest.raises(ValueError, match=match):
            sdk.track(**kwargs)  # type: ignore[arg-type]
        assert sdk._tracker is None or sdk._tracker.queue.backlog() == 0


async def test_the_sender_backs_off_when_the_key_is_refused(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    customer, _ = await service.customer(plan="team")
    caplog.set_level(logging.WARNING, "allotment_client.events")

    def sync() -> None:
        with Allotment(service.url, "not-a-key", spool=False, flush_interval=0.05) as sdk:
            sdk.track("api.call", customer, {"count": 1})
            started = time.monotonic()
            assert not sdk.flush(3)
            assert time.monotonic() - started >= 2.9
            sdk.close(0.1)

    await asyncio.to_thread(sync)
    tries = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert 1 <= len(tries) <= 6, len(tries)  # 0.25 + 0.5 + 1 + 2 s: not thousands
    caplog.clear()

    async with AsyncAllotment(service.url, "not-a-key", spool=False, flush_interval=0.05) as sdk:
        sdk.track("api.call", customer, {"count": 1})
        assert not await sdk.flush(3)
    tries = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert 1 <= len(tries) <= 6, len(tries)


def test_back_off_is_short_while_unreachable_and_long_while_the_key_is_refused() -> None:
    """An outage must not delay delivery for a minute after the service is back; a refused
    key must not be hammered."""
    from allotment_client.errors import RateLimited, Unauthorized, Unavailable, Unreachable
    from allotment_client.events import EventQueue, _Backoff, _failed

    queue = EventQueue()
    for outage in (Unreachable("connect failed"), Unavailable("down"), RateLimited("slow")):
        backoff = _Backoff()
        delays = [_failed(queue, backoff, outage) for _ in range(12)]
        assert delays[:3] == [0.25, 0.5, 1.0] and max(delays) == 5.0
    backoff = _Backoff()
    delays = [_failed(queue, backoff, Unauthorized("no", status=401)) for _ in range(12)]
    assert max(delays) == 60.0

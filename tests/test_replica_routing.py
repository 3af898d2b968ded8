"""Which reads the replica may serve (replica.py), from what a process measured and heard.

The measurement itself, and every read, against two real PostgreSQL processes: tests/scale
(`make test-scale`). Here the routing state is set as a measurement would leave it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import structlog
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import create_async_engine

from allotment.config import Settings
from allotment.replica import Replica, lsn

MAX_LAG_S = 5.0


@pytest.fixture
async def replica() -> AsyncIterator[Replica]:
    # Engines connect on first use only, and nothing here uses them.
    engine = create_async_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    made = Replica(engine=engine, primary=engine, max_lag_s=MAX_LAG_S, check_s=1.0)
    made.up = True
    made.caught_up_at = time.monotonic()
    yield made
    await engine.dispose()


def caught_up(replica: Replica) -> None:
    """As a measurement that found the replica holding everything committed until now."""
    time.sleep(0.001)
    replica.caught_up_at = time.monotonic()


def test_wal_positions_compare_as_numbers() -> None:
    assert lsn("0/3000148") < lsn("0/30001F0") < lsn("1/0") < lsn("16/B374D848")
    assert lsn("1/0") == 1 << 32


async def test_down_or_lagging_sends_every_read_to_the_primary(replica: Replica) -> None:
    assert replica.may_serve("acme") and replica.may_serve(None)
    replica.up = False
    assert not replica.may_serve("acme")
    replica.up = True
    replica.caught_up_at = time.monotonic() - MAX_LAG_S - 0.1
    assert not replica.may_serve("acme") and not replica.may_serve(None)


async def test_a_versioned_change_is_served_once_the_replica_has_its_version(
    replica: Replica,
) -> None:
    replica._on_customer("acme 1.0", {"customer": "acme", "state_version": 5})
    assert not replica.may_serve("acme")  # a plain read cannot compare versions
    assert replica.may_serve("acme", versioned=True)
    assert not replica.accepts("acme", 4)
    assert not replica.accepts("acme", None)  # the replica does not know acme yet
    assert replica.accepts("acme", 5)
    assert replica.may_serve("beta")  # another customer's read is unaffected
    assert not replica.may_serve(None)  # a read of every customer may include acme
    caught_up(replica)
    assert replica.may_serve("acme") and replica.may_serve(None)
    assert replica.accepts("acme", 1)  # nothing pending: whatever the replica holds


async def test_an_unversioned_change_waits_for_the_replica_to_catch_up(
    replica: Replica,
) -> None:
    replica._on_customer("acme 1.0", {"customer": "acme", "state_version": None})
    assert not replica.may_serve("acme", versioned=True)
    caught_up(replica)
    assert replica.may_serve("acme", versioned=True)


async def test_an_unknown_version_heard_with_a_known_one_stays_unknown(
    replica: Replica,
) -> None:
    replica.note("acme", 7)
    replica.note("acme", None)
    assert not replica.may_serve("acme", versioned=True)
    replica.note("beta", None)
    replica.note("beta", 9)
    assert not replica.may_serve("beta", versioned=True)
    replica.note("gamma", 3)
    replica.note("gamma", 2)  # heard late: the higher version stands
    assert not replica.accepts("gamma", 2) and replica.accepts("gamma", 3)


async def test_a_policy_change_or_a_reconnected_bus_sends_every_read_to_the_primary(
    replica: Replica,
) -> None:
    replica._on_policy("4 1.0")
    assert not replica.may_serve("acme", versioned=True)
    caught_up(replica)
    assert replica.may_serve("acme", versioned=True)
    replica._on_reconnect()
    assert not replica.may_serve("acme", versioned=True)


async def test_customers_forgotten_past_the_bound_count_as_every_customer(
    replica: Replica,
) -> None:
    replica.max_pending = 2
    for key in ("a", "b", "c"):
        replica.note(key, 1)
    assert not replica.may_serve("zzz", versioned=True)  # "a" was forgotten: anyone may be it
    caught_up(replica)
    assert replica.may_serve("zzz", versioned=True)


def test_a_bound_no_measurement_can_keep_is_refused() -> None:
    with pytest.raises(ValidationError, match="REPLICA_CHECK_S must be shorter"):
        Settings(replica_max_lag_s=1.0, replica_check_s=1.0)


async def test_a_version_the_client_asks_for_is_a_floor_too(replica: Replica) -> None:
    assert not replica.accepts("acme", 3, wanted=4)
    assert replica.accepts("acme", 4, wanted=4)
    assert not replica.accepts("acme", None, wanted=0)  # the replica lacks the customer
    replica.note("acme", 6)
    assert not replica.accepts("acme", 5, wanted=4)  # the version heard is higher


async def test_a_replica_never_measured_says_why_at_start_and_its_lag_is_unknown() -> None:
    """Nothing answers at 127.0.0.1:1 (a real refused connection): down from the first
    measurement, logged then (not only after being up once), the lag gauge -1 (unknown)
    rather than 0, and logged once however many measurements fail the same way."""
    engine = create_async_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    made = Replica(engine=engine, primary=engine, max_lag_s=MAX_LAG_S, check_s=0.1)
    counted = REGISTRY.get_sample_value(
        "allotment_replica_unusable_total", {"reason": "primary_unreachable"}
    )
    try:
        with structlog.testing.capture_logs() as logs:
            made.start()
            for _ in range(200):
                seen = REGISTRY.get_sample_value(
                    "allotment_replica_unusable_total", {"reason": "primary_unreachable"}
                )
                if (seen or 0) >= (counted or 0) + 3:
                    break
                await asyncio.sleep(0.05)
            await made.stop()
    finally:
        await engine.dispose()
    assert made.up is False and made.down_reason == "primary_unreachable"
    assert REGISTRY.get_sample_value("allotment_replica_up") == 0
    assert REGISTRY.get_sample_value("allotment_replica_lag_seconds") == -1
    down = [entry for entry in logs if entry["event"] == "replica_down"]
    assert len(down) == 1, logs
    assert down[0]["reason"] == "primary_unreachable" and down[0]["log_level"] == "warning"
    assert "could not be read" in down[0]["error"]


async def test_a_failed_read_makes_the_lag_unknown(replica: Replica) -> None:
    replica.failed(OSError("connection reset"))
    assert REGISTRY.get_sample_value("allotment_replica_lag_seconds") == -1
    assert not replica.may_serve("acme")

"""The Redis key layout (kit/keyspace.py): one Redis keeps the names earlier versions used
(processes of two versions share the bus during an upgrade); on a cluster the bus's keys
share one slot and customers spread."""

from __future__ import annotations

from redis.cluster import key_slot

from allotment.kit.keyspace import Keyspace


def test_one_redis_keeps_the_names_of_earlier_versions() -> None:
    keys = Keyspace("allotment")
    assert (keys.snapshot("acme"), keys.journal, keys.journal_epoch, keys.channel) == (
        "allotment:snap:acme",
        "allotment:journal",
        "allotment:journal:epoch",
        "allotment:invalidate",
    )


def test_on_a_cluster_the_bus_shares_one_slot_and_a_customer_has_its_own() -> None:
    keys = Keyspace("allotment", tagged=True)
    bus = {key_slot(k.encode()) for k in (keys.journal, keys.journal_epoch, keys.channel)}
    assert len(bus) == 1
    assert key_slot(keys.snapshot("acme").encode()) == key_slot(b"allotment:cust:acme")
    slots = {key_slot(keys.snapshot(f"c{n}").encode()) for n in range(100)}
    assert len(slots) > 90  # spread, not piled on one slot

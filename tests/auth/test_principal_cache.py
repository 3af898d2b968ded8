from __future__ import annotations

import time

from allotment.auth.cache import PrincipalCache
from allotment.auth.principal import Principal

KEY = Principal(key_id="key_1", name="k", scopes=frozenset({"check"}))


def test_entries_live_long_while_the_bus_is_up_and_short_while_it_is_down() -> None:
    connected = True
    cache = PrincipalCache(ttl=0.05, ttl_bus_up=60, bus_connected=lambda: connected)
    cache.put("h", KEY)
    time.sleep(0.06)
    assert cache.get("h") == KEY
    connected = False
    assert cache.get("h") is None  # older than the bus-down TTL
    assert cache.last_known("h", max_age=60) == KEY  # still usable while PostgreSQL is down


def test_revocation_drops_every_entry_of_the_key() -> None:
    cache = PrincipalCache(ttl=60)
    cache.put("h1", KEY)
    cache.put("h2", KEY)
    cache.drop_key("key_1")
    assert cache.get("h1") is None and cache.last_known("h2", max_age=60) is None

"""In-process cache of authenticated principals, keyed by the secret's hash.

A hit costs a dict lookup, which keeps authentication off the /v1/check budget.
Revocation drops entries at once here and, through the bus, everywhere; so while the bus is
connected an entry may live long (`ttl_bus_up`), and only while it is down does the short
`ttl` bound how long a missed revocation could be honoured. (A short TTL under load also
made every in-flight request re-query PostgreSQL at once each time it lapsed: a p99 spike.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from allotment.auth.principal import Principal

REVOKED_TOPIC = "api_key_revoked"


class PrincipalCache:
    def __init__(
        self,
        *,
        ttl: float,
        ttl_bus_up: float = 300.0,
        bus_connected: Callable[[], bool] = lambda: False,
        max_entries: int = 10_000,
    ) -> None:
        self.ttl = ttl
        self.ttl_bus_up = ttl_bus_up
        self.bus_connected = bus_connected
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}  # hash → (stored at, principal)

    def get(self, secret_hash: str) -> Principal | None:
        entry = self._entries.get(secret_hash)
        if entry is None:
            return None
        max_age = self.ttl_bus_up if self.bus_connected() else self.ttl
        if time.monotonic() - entry[0] > max_age:
            return None  # an expired entry stays for `last_known` until replaced or revoked
        return entry[1]

    def last_known(self, secret_hash: str, *, max_age: float) -> Principal | None:
        """The principal of an entry stored at most `max_age` ago, expired or not: what the
        service trusts while PostgreSQL cannot confirm the key (revocations still drop
        entries at once through the bus)."""
        entry = self._entries.get(secret_hash)
        if entry is None or time.monotonic() - entry[0] > max_age:
            return None
        return entry[1]

    def put(self, secret_hash: str, principal: Principal) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[secret_hash] = (time.monotonic(), principal)

    def drop_key(self, key_id: str) -> None:
        for secret_hash, (_, principal) in list(self._entries.items()):
            if principal.key_id == key_id:
                self._entries.pop(secret_hash, None)

    def clear(self) -> None:
        self._entries.clear()

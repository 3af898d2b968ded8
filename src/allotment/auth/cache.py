"""In-process cache of authenticated principals, keyed by the secret's hash.

A hit costs a dict lookup, which keeps authentication off the /v1/check budget. Entries
live `ttl` seconds; revocation drops them at once here and, through the bus, everywhere.
"""

from __future__ import annotations

import time

from allotment.auth.principal import Principal

REVOKED_TOPIC = "api_key_revoked"


class PrincipalCache:
    def __init__(self, *, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, secret_hash: str) -> Principal | None:
        entry = self._entries.get(secret_hash)
        if entry is None or entry[0] < time.monotonic():
            return None  # an expired entry stays for `last_known` until replaced or revoked
        return entry[1]

    def last_known(self, secret_hash: str, *, max_age: float) -> Principal | None:
        """The principal of an expired entry no older than `max_age` past its expiry: what
        the service trusts while PostgreSQL cannot confirm the key (revocations still drop
        entries at once through the bus)."""
        entry = self._entries.get(secret_hash)
        if entry is None or time.monotonic() - entry[0] > max_age:
            return None
        return entry[1]

    def put(self, secret_hash: str, principal: Principal) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[secret_hash] = (time.monotonic() + self.ttl, principal)

    def drop_key(self, key_id: str) -> None:
        for secret_hash, (_, principal) in list(self._entries.items()):
            if principal.key_id == key_id:
                self._entries.pop(secret_hash, None)

    def clear(self) -> None:
        self._entries.clear()

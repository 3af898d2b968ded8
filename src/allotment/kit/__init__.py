"""Small shared pieces used by every domain: ids, clock, JSON, pagination, idempotency, bus."""

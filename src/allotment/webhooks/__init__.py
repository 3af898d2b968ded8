"""Webhooks: endpoints, the transactional outbox and delivery (docs/webhooks.md)."""

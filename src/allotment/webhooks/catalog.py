"""The event types a webhook endpoint can subscribe to (docs/webhooks.md, "Event types").

One name per kind of message; an endpoint's `event_types` filter is checked against
`SUBSCRIBABLE`. `webhook.test` is sent only by `POST /v1/webhook-endpoints/{id}/test`, to
that endpoint alone, whatever its filter.
"""

from __future__ import annotations

ENTITLEMENTS_CHANGED = "entitlements.changed"
USAGE_THRESHOLD_REACHED = "usage.threshold_reached"
SEATS_LIMIT_REACHED = "seats.limit_reached"
INSTANCES_SURGE = "instances.surge"
USAGE_SURGE = "usage.surge"
CONTRACT_TRIAL_ENDING = "contract.trial_ending"
CONTRACT_RENEWAL_UPCOMING = "contract.renewal_upcoming"
CONTRACT_EXPIRED = "contract.expired"
POLICY_PUBLISHED = "policy.published"
RECONCILIATION_DISCREPANCY = "reconciliation.discrepancy"
WEBHOOK_TEST = "webhook.test"

SUBSCRIBABLE: tuple[str, ...] = (
    ENTITLEMENTS_CHANGED,
    USAGE_THRESHOLD_REACHED,
    SEATS_LIMIT_REACHED,
    INSTANCES_SURGE,
    USAGE_SURGE,
    CONTRACT_TRIAL_ENDING,
    CONTRACT_RENEWAL_UPCOMING,
    CONTRACT_EXPIRED,
    POLICY_PUBLISHED,
    RECONCILIATION_DISCREPANCY,
)

EVENT_TYPES: tuple[str, ...] = (*SUBSCRIBABLE, WEBHOOK_TEST)

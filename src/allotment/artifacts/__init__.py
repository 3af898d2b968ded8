"""Signed entitlement artifacts: a customer's entitlements at one instant, as a compact JWS
signed with the active signing key (allotment/signing), verifiable offline against the
published key set (docs/artifacts.md)."""

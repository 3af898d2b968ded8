"""The tenants domain's reads of its table for other domains.

QUOTAS_NOW   for checks (check/holdings.py, in its row shape): ('t', key, quotas as
             JSON) of each of the customer's tenants
"""

from __future__ import annotations

QUOTAS_NOW = (
    "SELECT 't', key, quotas::text, NULL, NULL, 0, NULL FROM tenants WHERE customer_id = :c"
)

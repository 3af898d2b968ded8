"""Billing: invoice previews of a contract's calendar month, and their reconciliation.

The modules:

    module        job
    pricing.py    the pure core: segments, seats, instances and meter totals → rounded lines
    groups.py     the pure core's first step: segments merged into the groups it prices
    data.py       gathers a contract's segments, intervals and meter totals for a period
    instant.py    the month and the instant a preview is taken at, from the request
    service.py    previews, finance's list of them, CSV, reconciliation
    reconcile.py  what was enforced against what the contract allows
    schemas.py    response bodies
    endpoints.py  the routes

docs/billing.md states every pricing rule with a worked example.
"""

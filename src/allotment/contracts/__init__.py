"""Contracts: what a customer bought, amended by revisions that billing prices in turn.

The modules:

    module        job
    terms.py      the pure core: terms, their checks against a catalog, effective limits
    models.py     contracts (the latest terms) and contract_revisions (the history)
    schemas.py    request and response bodies
    service.py    create, read, list, `current_terms`; the customer delete guard
    amend.py      amendments (PATCH, If-Match) and termination
    endpoints.py  the routes

docs/contracts.md describes the model: kinds, revisions, termination, the overlap rule.
"""

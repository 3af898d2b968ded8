"""Impact: what a policy version would change for every customer, before it is published.

It sits above the domains it reads (policy, contracts, customers, check, billing) and owns
no table: the dry-run evaluates each customer with the code that answers checks and prices
invoices (docs/check.md, "POST /v1/policies/{version}/dry-run").
"""

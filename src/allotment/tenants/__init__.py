"""Tenants: sub-divisions of a customer, each with quotas carved out of the contract's pools."""

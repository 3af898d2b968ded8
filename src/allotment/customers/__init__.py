"""Customers: the buyers, addressed everywhere by their caller-chosen key."""

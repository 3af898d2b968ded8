"""Seats: named member and guest seats, burst windows, and concurrent (floating) sessions."""

"""Instances: running copies registered under leases, counted by kind weight."""

"""The decision path: compiled per-customer snapshots and the pure evaluator behind /v1/check."""

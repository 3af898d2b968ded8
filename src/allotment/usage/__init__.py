"""Usage: CloudEvents ingestion, exactly once, into monthly partitions and hourly counters."""

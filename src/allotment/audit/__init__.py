"""The tamper-evident audit log: every mutation, hash-chained, written in its transaction."""

"""Release notes and the changelog of policy publishes and rollbacks (docs/release-notes.md)."""

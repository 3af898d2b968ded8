"""Signing keys: Ed25519 keys stored encrypted in PostgreSQL, rotated from `next` through
`active` to `retired`, published as a JWKS (docs/artifacts.md, "Keys and rotation")."""

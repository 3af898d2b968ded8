"""The change stream: GET /v1/stream, Server-Sent Events of committed changes (docs/stream.md)."""

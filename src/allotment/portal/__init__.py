"""The customer portal: server-rendered pages a customer opens with a one-time link
(docs/portal.md)."""

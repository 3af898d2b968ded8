"""Identifiers: sortable ULIDs with a readable prefix per kind (`key_…`, `dec_…`)."""

from __future__ import annotations

from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"

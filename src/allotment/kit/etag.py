"""`If-Match: <revision>` on versioned resources, and the matching `ETag`."""

from __future__ import annotations

from fastapi import Response

from allotment.errors import BadRequest


def parse_if_match(header: str | None) -> int | None:
    if header is None:
        return None
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit():
        raise BadRequest('If-Match must be the resource\'s revision, e.g. `If-Match: "3"`.')
    return int(value)


def set_etag(response: Response, revision: int) -> None:
    response.headers["ETag"] = f'"{revision}"'

"""`If-Match: <revision>` on versioned resources, and the matching `ETag`; `If-None-Match`
for representations tagged by their content (the JWKS)."""

from __future__ import annotations

import re

from fastapi import Response

from allotment.errors import BadRequest

# ASCII digits only (str.isdigit() also takes "²", which int() refuses), and few enough
# of them for int() to take (and for any revision to fit).
_REVISION = re.compile(r"[0-9]{1,18}")


def parse_if_match(header: str | None) -> int | None:
    if header is None:
        return None
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not _REVISION.fullmatch(value):
        raise BadRequest('If-Match must be the resource\'s revision, e.g. `If-Match: "3"`.')
    return int(value)


def set_etag(response: Response, revision: int) -> None:
    response.headers["ETag"] = f'"{revision}"'


def none_match(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match: <header>` names `etag` (RFC 9110 §13.1.2, weak comparison):
    then a GET answers 304. `*` matches any current representation."""
    if header is None:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False

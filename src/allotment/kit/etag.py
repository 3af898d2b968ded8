"""`If-Match: <revision>` on versioned resources, and the matching `ETag`."""

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

"""The CloudEvents HTTP binding's content modes, pure: a request's headers and body in, the
raw events `usage/events.py` validates out (docs/usage.md, "Sending events").

    mode         how it is recognised                        events
    structured   Content-Type application/cloudevents+json   one JSON object
                 or application/json (an object)
    batched      application/cloudevents-batch+json, or      a JSON array of objects
                 application/json holding an array
    binary       a `ce-specversion` header                    one: the attributes in `ce-*`
                                                             headers, `data` is the body

In binary mode each `ce-<name>` header is the attribute `<name>` (percent-decoded, as the
binding says string values are carried), `Content-Type` is `datacontenttype`, and the body is
`data`: JSON when the content type is JSON (`application/json`, `…+json`, or none), text
for `text/*`. Errors about an attribute then name its header (`ce-id`), not the JSON path, so
a sender sees what to fix in what it sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import orjson

from allotment.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from allotment.usage.events import Problem

BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"
PREFIX = "ce-"


def is_binary(headers: Mapping[str, str]) -> bool:
    return PREFIX + "specversion" in headers


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "application/json").split(";")[0].strip().lower()


def _is_json(media: str) -> bool:
    return media in ("", "application/json") or media.endswith("+json")


def from_binary(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The structured form of a binary-mode event (headers are lower-case, as Starlette
    gives them)."""
    event: dict[str, Any] = {
        name[len(PREFIX) :]: unquote(value)
        for name, value in headers.items()
        if name.startswith(PREFIX) and len(name) > len(PREFIX)
    }
    media = media_type(headers) if "content-type" in headers else ""
    if media:
        event["datacontenttype"] = media
    if not body:
        return event
    if _is_json(media):
        try:
            event["data"] = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(
                f"The body (the event's data) is not valid JSON: {exc}.", type="malformed-json"
            ) from None
    elif media.startswith("text/"):
        try:
            event["data"] = body.decode()
        except UnicodeDecodeError:
            raise BadRequest("The body (the event's data) is not UTF-8 text.") from None
    else:
        raise UnsupportedMediaType(
            f"Binary-mode data of type {media!r} cannot be metered: send JSON or text."
        )
    return event


def header_paths(problems: list[Problem]) -> list[Problem]:
    """Problems about a binary-mode event, each naming the header it came from."""
    out = []
    for problem in problems:
        path = problem["path"]
        if path and path != "data" and not path.startswith("data."):
            path = PREFIX + path
        out.append({**problem, "path": path})
    return out


def parse_body(headers: Mapping[str, str], body: bytes) -> tuple[list[Any], bool, bool]:
    """(raw events, whether a batch, whether binary mode) for a POST /v1/events request."""
    if is_binary(headers):
        return [from_binary(headers, body)], False, True
    media = media_type(headers)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}.", type="malformed-json") from None
    if media == BATCH_MEDIA_TYPE and not isinstance(parsed, list):
        raise ValidationFailed(
            "A batch is a JSON array of events.", errors=[{"path": "", "message": "not an array"}]
        )
    if isinstance(parsed, list):
        return parsed, True, False
    return [parsed], False, False

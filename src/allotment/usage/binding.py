"""The CloudEvents HTTP binding's content modes, pure: a request's headers and body in, the
raw events `usage/events.py` validates out (docs/usage.md, "Sending events").

    mode         how it is recognised                        events
    structured   Content-Type application/cloudevents+json   one JSON object
                 (or application/json and no `ce-*` header)
    batched      application/cloudevents-batch+json, or      a JSON array of objects
                 application/json holding an array
    binary       any `ce-*` header, the Content-Type not     one: the attributes in `ce-*`
                 application/cloudevents…                    headers, `data` is the body

In binary mode each `ce-<name>` header is the attribute `<name>`, `Content-Type` is
`datacontenttype`, and the body is `data`: JSON when the content type is JSON
(`application/json`, `…+json`, or none), text for `text/*` (`events.data_from_bytes`, as for
a structured event's `data_base64`). A header value is printable ASCII, percent-encoded UTF-8
(as the binding carries strings); each `ce-*` header is given once; `ce-specversion` is
required; `data`, `data_base64` and `datacontenttype` are not headers (the body and
`Content-Type` carry them). Errors about an attribute name its header (`ce-id`), not the JSON
path, so a sender sees what to fix in what it sent; a header that breaks these rules is
refused before anything else is read, never decoded with replacement characters (two
different ids would otherwise become one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from allotment.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from allotment.usage.events import DataError, Problem, data_from_bytes, media_of

BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"
EVENT_MEDIA_TYPE = "application/cloudevents+json"
PREFIX = "ce-"
_PREFIX = PREFIX.encode()
_STRUCTURED = "application/cloudevents"  # + "+json", "-batch+json", or another format
_NOT_HEADERS = {
    "data": "reserved, not an extension: in binary mode the body is the event's data",
    "data_base64": "reserved, not an extension: in binary mode the body is the event's data",
    "datacontenttype": "reserved, not an extension: in binary mode Content-Type is the "
    "event's datacontenttype",
}

Headers = Sequence[tuple[bytes, bytes]]  # as ASGI gives them: names lower-case, repeats kept


def _ce_headers(headers: Headers) -> list[tuple[str, bytes]]:
    return [
        (name.decode("latin-1").lower(), value)
        for name, value in headers
        if name.lower().startswith(_PREFIX) and len(name) > len(_PREFIX)
    ]


def content_type(headers: Headers) -> str | None:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1")
    return None


def media_type(headers: Headers) -> str:
    """The Content-Type's media type, lower-case; application/json when there is none."""
    found = content_type(headers)
    return media_of(found) if found is not None else "application/json"


def is_binary(headers: Headers) -> bool:
    """Binary content mode: `ce-*` headers, and a body that is not a structured CloudEvent."""
    return not media_type(headers).startswith(_STRUCTURED) and bool(_ce_headers(headers))


def from_binary(headers: Headers, body: bytes) -> dict[str, Any]:
    """The structured form of a binary-mode event; a 422 naming the header when a `ce-*`
    header breaks the binding's rules."""
    event: dict[str, Any] = {}
    problems: list[Problem] = []
    sent = _ce_headers(headers)
    times = Counter(name for name, _ in sent)
    for name, value in sent:
        attribute = name[len(PREFIX) :]
        if times[name] > 1:
            if attribute not in event:  # reported once
                event[attribute] = None
                problems.append({"path": name, "message": "given more than once"})
        elif attribute in _NOT_HEADERS:
            problems.append({"path": name, "message": _NOT_HEADERS[attribute]})
        elif any(byte < 0x20 or byte > 0x7E for byte in value):
            problems.append(
                {
                    "path": name,
                    "message": "bytes outside printable ASCII: percent-encode the value "
                    "(UTF-8), as the CloudEvents HTTP binding requires",
                }
            )
        else:
            try:
                event[attribute] = unquote_to_bytes(value).decode()
            except UnicodeDecodeError:
                problems.append({"path": name, "message": "not valid percent-encoded UTF-8"})
    if PREFIX + "specversion" not in times:
        problems.append(
            {
                "path": PREFIX + "specversion",
                "message": 'required: "1.0" (binary mode: the event\'s attributes are ce-* '
                "headers)",
            }
        )
    if problems:
        raise ValidationFailed(
            "The event was rejected: "
            + "; ".join(f"{p['path']}: {p['message']}" for p in problems),
            errors=problems,
        )
    found = content_type(headers)
    media = media_of(found) if found is not None else ""
    if media:
        event["datacontenttype"] = media
    if not body:
        return event
    try:
        event["data"] = data_from_bytes(body, media)
    except DataError as exc:
        if exc.kind == "json":
            raise BadRequest(
                f"The body (the event's data) is not valid JSON: {exc.detail}.",
                type="malformed-json",
            ) from None
        if exc.kind == "text":
            raise BadRequest("The body (the event's data) is not UTF-8 text.") from None
        raise UnsupportedMediaType(
            f"Binary-mode data of type {media!r} cannot be metered: send JSON or text."
        ) from None
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


def parse_body(headers: Headers, body: bytes) -> tuple[list[Any], bool, bool]:
    """(raw events, whether a batch, whether binary mode) for a POST /v1/events request."""
    if is_binary(headers):
        return [from_binary(headers, body)], False, True
    media = media_type(headers)
    if media.startswith(_STRUCTURED) and media not in (EVENT_MEDIA_TYPE, BATCH_MEDIA_TYPE):
        raise UnsupportedMediaType(
            f"Structured CloudEvents of type {media!r} are not read: send "
            f"{EVENT_MEDIA_TYPE} or {BATCH_MEDIA_TYPE}."
        )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}.", type="malformed-json") from None
    if media == BATCH_MEDIA_TYPE and not isinstance(parsed, list):
        raise ValidationFailed(
            "A batch is a JSON array of events.", errors=[{"path": "", "message": "not an array"}]
        )
    if media == EVENT_MEDIA_TYPE and isinstance(parsed, list):
        message = f"an array: one event is an object; send a batch as {BATCH_MEDIA_TYPE}"
        raise ValidationFailed(
            f"{EVENT_MEDIA_TYPE} is one event (a JSON object); send a batch (an array) as "
            f"{BATCH_MEDIA_TYPE}.",
            errors=[{"path": "", "message": message}],
        )
    if isinstance(parsed, list):
        return parsed, True, False
    return [parsed], False, False

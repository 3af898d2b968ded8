"""Reading `POST /v1/events` as the service reads it (docs/usage.md, "Sending events"), far
enough to spool each event under its identity: every content mode of the CloudEvents HTTP
binding, each event checked for what the spool and the service's dedupe need.

    events_of(content_type, ce_headers, body) → (events, single)   or raises Refused
    problems(event) → [{path, message}]         what makes an event unusable here (or
                                                 anywhere: a time without an offset)

    structured   application/cloudevents+json, or application/json without ce-* headers: one
                 object (an array as cloudevents+json is a 422: a batch has its own type)
    batched      application/cloudevents-batch+json, or an array as application/json (≤ 1,000)
    binary       any ce-* header with another Content-Type: attributes from the headers
                 (percent-decoded, strictly), the body as `data` (JSON for a JSON type or
                 none, a string for text/*, else 415)

An event is spooled as the service would read it, binary ones turned into their structured
form (`data` as parsed here, which the service digests like the binary body: a replay in
either mode is a duplicate). What only the service can judge — the customer, the tenant,
the time window, the meters' data — it judges on delivery; events it refuses are counted
(`allotment_agent_events_total{result="refused"}`) and logged, never retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

import orjson

from allotment_client.events import time_problem

from .shapes import CUSTOMER_KEY

MAX_EVENTS = 1000
MAX_ID = 256
MAX_SOURCE = 1024
MAX_TYPE = 256
FORBIDDEN_HEADERS = frozenset({"ce-data", "ce-data_base64", "ce-datacontenttype"})


class Refused(Exception):
    """The request as a whole is refused: `status` (400, 413, 415, 422) and, for a 422,
    `errors`."""

    def __init__(
        self, status: int, detail: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media in ("", "application/json") or media.endswith("+json")


def _load(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"The body is not valid JSON: {exc}") from None


def events_of(
    content_type: str | None, ce_headers: Iterable[tuple[str, bytes]], body: bytes
) -> tuple[list[Any], bool]:
    """The events of a request, and whether it carried a single one (its failure is the
    request's: a 422) rather than a batch (failures by index)."""
    media = _media(content_type)
    headers = list(ce_headers)
    if headers and not media.startswith("application/cloudevents"):
        return [_binary(media, headers, body)], True
    if media == "application/cloudevents-batch+json" or (media in ("", "application/json")):
        document = _load(body)
        if isinstance(document, list):
            if len(document) > MAX_EVENTS:
                raise Refused(
                    413, f"A batch holds at most {MAX_EVENTS} events, not {len(document)}"
                )
            return document, False
        if media == "application/cloudevents-batch+json":
            raise Refused(422, "A batch is a JSON array", [{"path": "", "message": "an array"}])
        return [document], True
    if media == "application/cloudevents+json":
        document = _load(body)
        if isinstance(document, list):
            raise Refused(
                422,
                "An array is a batch: send it as application/cloudevents-batch+json",
                [{"path": "", "message": "an object"}],
            )
        return [document], True
    raise Refused(415, f"Events are CloudEvents JSON, not {media or 'this'}")


def _binary(media: str, headers: list[tuple[str, bytes]], body: bytes) -> dict[str, Any]:
    errors: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for name, raw in headers:
        if name in seen:
            errors.append({"path": name, "message": "given more than once"})
            continue
        if name in FORBIDDEN_HEADERS:
            errors.append({"path": name, "message": "the body is the data; Content-Type its type"})
            continue
        try:
            text = raw.decode("ascii")
            if not text.isprintable():
                raise ValueError
        except (UnicodeDecodeError, ValueError):
            errors.append({"path": name, "message": "printable ASCII only: percent-encode UTF-8"})
            continue
        try:
            seen[name] = unquote(text, errors="strict")
        except UnicodeDecodeError:
            errors.append({"path": name, "message": "not valid percent-encoded UTF-8"})
    if "ce-specversion" not in seen and not any(e["path"] == "ce-specversion" for e in errors):
        errors.append(
            {"path": "ce-specversion", "message": "required: ce-* headers mean binary mode"}
        )
    if errors:
        raise Refused(422, "The event's ce-* headers are not acceptable", errors)
    event: dict[str, Any] = {name[3:]: value for name, value in seen.items()}
    if body:
        if _is_json(media):
            event["data"] = _load(body)
        elif media.startswith("text/"):
            try:
                event["data"] = body.decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(400, "A text/* body must be UTF-8") from None
        else:
            raise Refused(415, f"Binary-mode data is JSON or text/*, not {media}")
    return event


def problems(event: Any) -> list[dict[str, str]]:
    """What keeps an event from being spooled: not an object, or without the attributes
    its identity and its delivery need (specversion, id, source, type, a subject that can
    be a customer key), each as the service checks it (`usage/events.py` `parse`; a property
    test holds that whatever is refused here, the service refuses too)."""
    if not isinstance(event, Mapping):
        return [{"path": "", "message": "an event is a JSON object"}]
    errors = []
    if event.get("specversion") != "1.0":
        errors.append({"path": "specversion", "message": 'must be "1.0"'})
    for name, limit in (("id", MAX_ID), ("source", MAX_SOURCE), ("type", MAX_TYPE)):
        value = event.get(name)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            errors.append({"path": name, "message": f"required: a non-empty string (≤ {limit})"})
    subject = event.get("subject")
    if not isinstance(subject, str) or not CUSTOMER_KEY.fullmatch(subject):
        errors.append({"path": "subject", "message": "a customer key: a-z, 0-9, -_. (≤ 64)"})
    if event.get("time") is not None:
        problem = time_problem(event["time"])
        if problem:
            errors.append({"path": "time", "message": problem})
    tenant = event.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        errors.append({"path": "tenant", "message": "a tenant key (a non-empty string)"})
    return errors

"""The OFREP operations in the service's OpenAPI document: the protocol's shapes, not ours.

The app builds its document, declares problem+json errors on every operation, then hands it
here: the two OFREP operations get the protocol's request body, responses (200 and 304, 400
and 404 with `errorCode`, 401/403 without a body, 429 with `Retry-After`, 500) and both of
its security schemes. The schemas follow the protocol's OpenAPI document (kept, verbatim,
as tests/ofrep/ofrep-openapi.yaml), narrowed to what Allotment answers: boolean and integer
flags, and a limit without a value (the protocol's code default).
"""

from __future__ import annotations

from typing import Any

from allotment.ofrep.fastpath import BULK, SINGLE

API_KEY = "apiKey"
_REF = "#/components/schemas/"

_METADATA = {
    "type": "object",
    "description": "Flag metadata: strings, numbers and booleans only.",
    "additionalProperties": {"type": ["boolean", "string", "number"]},
}
SCHEMAS: dict[str, Any] = {
    "OfrepContext": {
        "type": "object",
        "description": "`targetingKey` is the subject; `customer` is required unless the key "
        "is customer-scoped; `instance` and `tenant` as in a check; anything else is the "
        "rules' `context`.",
        "properties": {
            "targetingKey": {"type": "string"},
            "customer": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"},
            "instance": {"type": "string"},
            "tenant": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"},
        },
        "additionalProperties": True,
    },
    "OfrepEvaluationRequest": {
        "type": "object",
        "required": ["context"],
        "properties": {"context": {"$ref": _REF + "OfrepContext"}},
    },
    "OfrepEvaluationSuccess": {
        "type": "object",
        "required": ["key", "reason", "variant"],
        "properties": {
            "key": {"type": "string"},
            "value": {
                "type": ["boolean", "integer"],
                "description": "A feature: boolean; a limit: integer; absent: the protocol's "
                "code default — a meter without a limit (variant `unlimited`) or no contract "
                "in force (variant `not_in_force`).",
            },
            "reason": {"type": "string", "enum": ["TARGETING_MATCH", "DISABLED"]},
            "variant": {
                "type": "string",
                "enum": ["on", "off", "limited", "unlimited", "not_in_force"],
            },
            "metadata": _METADATA,
        },
    },
    "OfrepEvaluationFailure": {
        "type": "object",
        "required": ["key", "errorCode"],
        "properties": {
            "key": {"type": "string"},
            "errorCode": {
                "type": "string",
                "enum": ["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"],
            },
            "errorDetails": {"type": "string"},
        },
    },
    "OfrepFlagNotFound": {
        "type": "object",
        "required": ["key", "errorCode"],
        "properties": {
            "key": {"type": "string"},
            "errorCode": {"type": "string", "enum": ["FLAG_NOT_FOUND"]},
            "errorDetails": {"type": "string"},
        },
    },
    "OfrepBulkEvaluationSuccess": {
        "type": "object",
        "required": ["flags"],
        "properties": {
            "flags": {
                "type": "array",
                "items": {
                    "oneOf": [
                        {"$ref": _REF + "OfrepEvaluationSuccess"},
                        {"$ref": _REF + "OfrepEvaluationFailure"},
                    ]
                },
            },
            "metadata": _METADATA,
        },
    },
    "OfrepBulkEvaluationFailure": {
        "type": "object",
        "required": ["errorCode"],
        "properties": {
            "errorCode": {
                "type": "string",
                "enum": ["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"],
            },
            "errorDetails": {"type": "string"},
        },
    },
    "OfrepGeneralError": {
        "type": "object",
        "properties": {"errorDetails": {"type": "string"}},
    },
}


def _json(name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF + name}}},
    }


_COMMON: dict[str, Any] = {
    "401": {"description": "No key, or an unknown or revoked one. No body."},
    "403": {"description": "The key may not evaluate (this customer). No body."},
    "405": _json("OfrepGeneralError", "Not POST."),
    "429": {
        "description": "The store is down and nothing is cached: retry after `Retry-After`.",
        "headers": {
            "Retry-After": {
                "description": "Whole seconds to wait.",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        },
    },
    "500": _json("OfrepGeneralError", "An unexpected error."),
}
_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": _REF + "OfrepEvaluationRequest"}}},
}


def declare(document: dict[str, Any]) -> None:
    """Give the OFREP operations of `document` the protocol's shapes, in place."""
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(SCHEMAS)
    components.setdefault("securitySchemes", {})[API_KEY] = {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key as the bearer scheme, as OFREP clients may send it.",
    }
    single = document["paths"][SINGLE + "{key}"]["post"]
    bulk = document["paths"][BULK]["post"]
    for operation in (single, bulk):
        operation["requestBody"] = _BODY
        operation["security"] = [{"bearer": []}, {API_KEY: []}]
    single["responses"] = {
        "200": _json("OfrepEvaluationSuccess", "The flag, evaluated."),
        "400": _json("OfrepEvaluationFailure", "A body or context the flag cannot be read with."),
        "404": _json("OfrepFlagNotFound", "No such flag."),
        **_COMMON,
    }
    bulk["responses"] = {
        "200": {
            **_json("OfrepBulkEvaluationSuccess", "Every flag of the customer."),
            "headers": {"ETag": {"schema": {"type": "string"}}},
        },
        "304": {"description": "`If-None-Match` names the current ETag: nothing changed."},
        "400": _json("OfrepBulkEvaluationFailure", "A body or context that cannot be read."),
        **_COMMON,
    }

"""Standard Webhooks signing (https://www.standardwebhooks.com): secrets and headers; pure.

    new_secret()                       "whsec_" + base64 of 32 random bytes
    headers(msg_id, timestamp, body, secrets)
        webhook-id          the message id, the same on every retry
        webhook-timestamp   Unix seconds of this attempt
        webhook-signature   "v1,<base64 HMAC-SHA256 of id.timestamp.body>", one per secret
                            (space-separated: during a rotation, the new and the old)

The HMAC key is the base64-decoded part of the secret after `whsec_`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random_bytes
from collections.abc import Sequence

PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(random_bytes.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, *, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    content = f"{msg_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def headers(msg_id: str, timestamp: int, body: str, secrets: Sequence[str]) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(secret, msg_id=msg_id, timestamp=timestamp, body=body) for secret in secrets
        ),
        "content-type": "application/json",
    }

"""The signing secret, and the sealing of private keys under it.

The secret is `ALLOTMENT_SIGNING_SECRET`; unset, it is read from `<data_dir>/signing-secret`,
which the first process that needs it creates (random, mode 0600) and says so once in the
log. Every process of a deployment must see the same secret: on several hosts, set the
variable (a secret manager's value) rather than let each host make its own file.

A private key is sealed with AES-256-GCM under a key derived from the secret with HKDF-SHA256,
the kid as associated data (a sealed half moved to another row does not open). A secret
other than the one the keys were sealed under fails to open them: `SigningSecretMismatch`,
a clear message and never new keys in their stead.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from allotment.config import Settings
from allotment.errors import ServiceUnavailable

log = structlog.get_logger("allotment.signing")

SECRET_FILE = "signing-secret"
_SALT = b"allotment signing keys"
_INFO = b"allotment/signing-keys/aes-256-gcm/v1"
_NONCE = 12


class SigningSecretMismatch(ServiceUnavailable):
    """The stored keys were sealed under another secret (or the secret cannot be read)."""

    type = "signing-secret-mismatch"
    title = "Signing keys unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=60)


@dataclass(frozen=True)
class Sealer:
    """AES-256-GCM under the key derived from one secret; `origin` says where it came from."""

    key: bytes
    origin: str

    def seal(self, private: bytes, *, kid: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.key).encrypt(nonce, private, kid.encode())

    def open(self, sealed: bytes, *, kid: str) -> bytes:
        try:
            return AESGCM(self.key).decrypt(sealed[:_NONCE], sealed[_NONCE:], kid.encode())
        except (InvalidTag, ValueError):
            raise SigningSecretMismatch(
                f"Signing key {kid} cannot be decrypted with the signing secret from "
                f"{self.origin}: it is not the secret the keys were made with. Restore that "
                "secret (ALLOTMENT_SIGNING_SECRET, or the signing-secret file); new keys are "
                "not made in their stead."
            ) from None


def derive(secret: str, *, info: bytes = _INFO) -> bytes:
    """The 256-bit AES key for `secret` (HKDF-SHA256); `info` names what it seals, so each
    use (signing keys, webhook secrets) has a key of its own."""
    return HKDF(algorithm=SHA256(), length=32, salt=_SALT, info=info).derive(secret.encode())


def sealer(settings: Settings, *, info: bytes = _INFO) -> Sealer:
    """The sealer for the configured secret, creating the secret file when there is none."""
    value, origin = secret(settings)
    return Sealer(derive(value, info=info), origin)


def secret(settings: Settings) -> tuple[str, str]:
    """The signing secret and where it came from, creating the secret file when there is
    none. (Subjects' pseudonyms derive their key from it too: privacy/pseudonyms.py.)"""
    if settings.signing_secret is not None:
        value = settings.signing_secret.get_secret_value()
        if not value.strip():
            raise SigningSecretMismatch("ALLOTMENT_SIGNING_SECRET is set but empty.")
        return value, "ALLOTMENT_SIGNING_SECRET"
    path = (settings.data_dir / SECRET_FILE).resolve()
    return _file_secret(path), str(path)


def _file_secret(path: Path) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of two processes starting together, one creates it and the other reads it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as exc:
        raise SigningSecretMismatch(f"Cannot create the signing secret {path}: {exc}.") from None
    value = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    log.warning(
        "signing_secret_generated",
        path=str(path),
        advice="keep this file (or set ALLOTMENT_SIGNING_SECRET to its content): the signing "
        "keys cannot be used without it",
    )
    return value


def _read(path: Path) -> str:
    for _ in range(50):  # the creating process may not have written it yet
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise SigningSecretMismatch(f"Cannot read the signing secret {path}: {exc}.") from None
        if value:
            return value
        time.sleep(0.02)
    raise SigningSecretMismatch(f"The signing secret file {path} is empty.")

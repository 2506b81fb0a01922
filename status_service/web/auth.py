"""API keys from the Authorization header: Bearer, or Basic with the key as user or password."""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets

MAX_KEY_LENGTH = 256
KEY_PREFIX = "sst_"  # lets a leaked key be recognised (and searched for) as this service's
BADGE_PREFIX = "sbt_"  # a badge token: it reads one tenant's badge and nothing else
_KEY = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII, no spaces
HINT = "send 'Authorization: Bearer <api key>'"


class AuthError(Exception):
    """The request carries no usable credential; `message` says what is wrong, never the key."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def digest(key: str) -> str:
    """Return the SHA-256 hex digest under which a key is registered."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def new_key(prefix: str = KEY_PREFIX) -> str:
    """Return a new API key (or, with BADGE_PREFIX, badge token): the prefix and 32 random bytes."""
    return prefix + secrets.token_urlsafe(32)


def candidate_keys(header: str | None) -> list[str]:
    """Return the keys an Authorization header offers, or raise AuthError."""
    if header is None or not header.strip():
        raise AuthError(f"missing Authorization header; {HINT}")
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return [_checked(credentials)]
    if scheme.lower() == "basic":
        return _basic(credentials)
    raise AuthError(f"unsupported Authorization scheme; {HINT}")


def _basic(credentials: str) -> list[str]:
    try:
        decoded = base64.b64decode(credentials.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        raise AuthError("malformed Basic credentials; expected base64 of 'key:' or ':key'") from None
    user, _, password = decoded.partition(":")
    parts = [part for part in (user, password) if part]
    if not parts:
        raise AuthError("empty Basic credentials; put the API key as user name or password")
    # The half that is not the key may be anything a browser lets a person type.
    keys = [part for part in parts if well_formed(part)]
    if not keys:
        return [_checked(parts[0])]  # raises, naming what is wrong
    return keys


def well_formed(key: str) -> bool:
    """Return whether a key (or badge token) is of the form keys take: up to 256 visible ASCII characters."""
    return 0 < len(key) <= MAX_KEY_LENGTH and bool(_KEY.match(key))


def _checked(key: str) -> str:
    if not key:
        raise AuthError(f"empty API key; {HINT}")
    if len(key) > MAX_KEY_LENGTH or not _KEY.match(key):
        raise AuthError(f"malformed API key: expected up to {MAX_KEY_LENGTH} visible ASCII characters")
    return key

"""Encryption of customers' provider credentials at rest (Fernet), with keys that can be rotated."""
from __future__ import annotations

import os
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_FILE = "secret.key"  # under the data directory, for the embedded Redis only
HOW_TO_MAKE = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


class CipherError(Exception):
    """The secret key is missing or not a Fernet key, or a stored value cannot be decrypted."""


class Cipher:
    """Encrypts with the first key and decrypts with any of them (MultiFernet)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise CipherError("no secret key")
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys])
        except (ValueError, TypeError):
            raise CipherError(f"STATUS_SECRET_KEY: each comma-separated key must be a Fernet key (make one with: {HOW_TO_MAKE})") from None

    def seal(self, plain: str) -> str:
        """Return the token of a text."""
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, token: str) -> str:
        """Return the text of a token; raise CipherError when no key opens it."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeError):
            raise CipherError("a stored secret cannot be decrypted with any key of STATUS_SECRET_KEY") from None


def from_settings(secret_keys: str | None, external_redis: bool, data_dir: str) -> Cipher:
    """Return the cipher of STATUS_SECRET_KEY; with the embedded Redis, a key made once under the data directory."""
    if secret_keys:
        return Cipher([k for k in secret_keys.split(",") if k.strip()])
    if external_redis:
        raise CipherError(f"STATUS_SECRET_KEY: required with REDIS_URL, so that credentials are stored encrypted (make one with: {HOW_TO_MAKE})")
    return Cipher([_local_key(Path(data_dir) / KEY_FILE)])


def _local_key(path: Path) -> str:
    """Return the key kept in `path`, making it (mode 0600) if there is none yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two processes starting at once, one writes the key and the other reads it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.01)  # the other process is writing it
        raise CipherError(f"{path}: empty secret key file; delete it or set STATUS_SECRET_KEY") from None
    with os.fdopen(fd, "w") as out:
        key = Fernet.generate_key().decode()
        out.write(key + "\n")
    return key

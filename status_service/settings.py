"""The environment, read once into a frozen Settings object."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from .cipher import Cipher

DEFAULT_CONFIG = "config/status.yaml"
DEFAULT_PREFIX = "status:"
DEFAULT_DATA_DIR = "var"
DEFAULT_REDIS_TIMEOUT_S = 1.0
DEFAULT_WEB_MEMORY_MB = 64

_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")


class SettingsError(Exception):
    """An environment variable has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """What the processes read from the environment."""

    redis_url: str | None = None  # None: the embedded Redis under data_dir
    redis_cluster: bool = False
    config_path: str = DEFAULT_CONFIG
    key_prefix: str = DEFAULT_PREFIX
    data_dir: str = DEFAULT_DATA_DIR
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S
    web_memory_bytes: int = DEFAULT_WEB_MEMORY_MB * 1024 * 1024  # per web worker; 0: read Redis every time
    log_level: str = "INFO"
    admin_key_sha256: str | None = None  # a key of the admin API besides the config file's (id "env")
    secret_keys: str | None = field(default=None, repr=False)  # STATUS_SECRET_KEY: Fernet keys, comma-separated
    metrics_token: str | None = field(default=None, repr=False)  # STATUS_METRICS_TOKEN: /metrics wants it as a Bearer token


def from_env(environ: Mapping[str, str]) -> Settings:
    """Read and check the settings; raise SettingsError naming the bad variable."""
    prefix = environ.get("STATUS_KEY_PREFIX", DEFAULT_PREFIX)
    if not _PREFIX.match(prefix):
        raise SettingsError("STATUS_KEY_PREFIX: use up to 64 letters, digits and _ . : -")
    url = environ.get("REDIS_URL") or None
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("REDIS_URL: must start with redis://, rediss:// or unix://")
    level = environ.get("LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError("LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR")
    cluster = environ.get("REDIS_CLUSTER", "").lower()
    if cluster not in ("", "0", "1", "false", "true", "no", "yes"):
        raise SettingsError("REDIS_CLUSTER: must be true or false")
    admin_digest = environ.get("STATUS_ADMIN_KEY_SHA256", "").strip().lower() or None
    if admin_digest and not re.fullmatch(r"[0-9a-f]{64}", admin_digest):
        raise SettingsError("STATUS_ADMIN_KEY_SHA256: must be the SHA-256 hex digest of the admin key")
    return Settings(
        admin_key_sha256=admin_digest,
        secret_keys=environ.get("STATUS_SECRET_KEY", "").strip() or None,
        metrics_token=environ.get("STATUS_METRICS_TOKEN", "").strip() or None,
        redis_url=url,
        redis_cluster=cluster in ("1", "true", "yes"),
        config_path=environ.get("STATUS_CONFIG", DEFAULT_CONFIG),
        key_prefix=prefix,
        data_dir=environ.get("STATUS_DATA_DIR", DEFAULT_DATA_DIR),
        redis_timeout_s=_seconds(environ, "REDIS_TIMEOUT_SECONDS", DEFAULT_REDIS_TIMEOUT_S, 0.01),
        web_memory_bytes=_megabytes(environ, "STATUS_WEB_MEMORY_MB", DEFAULT_WEB_MEMORY_MB) * 1024 * 1024,
        log_level=level,
    )


def _seconds(environ: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: not a number") from None
    if not minimum <= value <= 60:
        raise SettingsError(f"{name}: must be between {minimum} and 60")
    return value


def _megabytes(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65536:
        raise SettingsError(f"{name}: must be a whole number of megabytes from 0 to 65536")
    return int(raw)


def configure_logging(settings: Settings) -> None:
    """Log redacted `event key=value` lines at the configured level."""
    from .logs import redact_handlers

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    # Libraries (urllib3, redis, ...) log URLs and errors in their own words: redact every line.
    redact_handlers(logging.getLogger())
    # Python warnings (urllib3's among them) would reach stderr unredacted; send them through logging.
    logging.captureWarnings(True)
    # urllib3 logs every request line at DEBUG: noise, even redacted.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def credentials_cipher(settings: Settings) -> "Cipher":
    """Return the cipher of provider credentials; raise SettingsError when its key is missing or bad."""
    from .cipher import CipherError, from_settings

    try:
        return from_settings(settings.secret_keys, settings.redis_url is not None, settings.data_dir)
    except CipherError as exc:
        raise SettingsError(str(exc)) from None


def redis_url(settings: Settings) -> str:
    """Return the Redis to use: REDIS_URL, or the embedded one (started on first use)."""
    if settings.redis_url:
        return settings.redis_url
    from . import embedded

    return embedded.ensure(Path(settings.data_dir) / "redis")

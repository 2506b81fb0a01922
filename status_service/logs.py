"""Redaction of every log line: no URL path, query string, URL credential or Authorization value is written."""
from __future__ import annotations

import logging
import re

from gunicorn.config import Config
from gunicorn.glogging import Logger

REDACTED = "<redacted>"

# (words one of which a line must hold for the rule to apply, pattern, replacement): the cheap test
# first keeps an access-log line at a couple of microseconds.
_RULES = (
    # URL user-info, up to the last @ of the URL: passwords are not always percent-encoded, and may
    # hold an @ or a slash (a path holding an @ is redacted too, which the next rule would do anyway).
    (("://",), re.compile(r"(?<=://)\S*@"), REDACTED + "@"),
    # URL paths: some carry a token (bot and webhook URLs), and libraries log the URLs they fetch.
    # The scheme, host and port stay, to tell which upstream it was.
    (("://",), re.compile(r"(://[^\s/?#'\"]*)/[^\s?#'\")]+"), r"\1/" + REDACTED),
    # Query strings, in URLs and request lines: keys and tokens are often sent as parameters.
    (("?",), re.compile(r"\?\S+"), "?" + REDACTED),
    # Credentials after an auth scheme, as in an Authorization header or a repr of one.
    (("bearer", "basic", "digest"), re.compile(r"(?i)\b(bearer|basic|digest)\s+[^\s'\",;]+"), r"\1 " + REDACTED),
    # An Authorization header's whole value, to the closing quote or the end of the line (a header
    # line that lost its colon, as a malformed request logs it, too).
    (("authorization",), re.compile(r"(?i)\b((?:proxy-)?authorization['\"]?(?:\s*[:=]\s*|\s+)['\"]?)[^'\"\r\n]+"), r"\1" + REDACTED),
    # What a client sent that gunicorn could not parse (a header line without its colon, say), which it
    # logs as a repr after the error's name: any of it may be a credential.
    (("invalid request from",), re.compile(r"(?i)(invalid request from ip=\S*?:\s[^:\n]*:)[^\n]*"), r"\1 " + REDACTED),
    # Values of credential-named fields, whatever comes before or after the name: `'api_key': 'x'`,
    # `client_secret=x`, `apiToken: x`, a `Cookie:` or `Set-Cookie:` header line.
    (
        ("key", "token", "passw", "secret", "cookie", "credential"),
        re.compile(
            r"(?i)([\w-]*(?:api[-_]?key|token|password|passwd|secret|cookie|credential)[\w-]*)"
            r"(['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&}]+"
        ),
        r"\1\2" + REDACTED,
    ),
)


def redact(text: str) -> str:
    """Return text with URL paths, query strings, URL user-info and credential values replaced."""
    lowered = text.lower()
    for words, pattern, replacement in _RULES:
        if any(word in lowered for word in words):
            text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Format as the wrapped formatter does, then redact the whole text, traceback included."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        # The final text, not the message: libraries pass URLs in args and exceptions.
        return redact(self.inner.format(record))


def redact_handlers(logger: logging.Logger) -> None:
    """Make every handler of a logger redact what it writes."""
    for handler in logger.handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter))


class RedactingLogger(Logger):
    """Gunicorn's logger, with its error and access logs redacted (`logger_class` in the config)."""

    def setup(self, cfg: Config) -> None:
        """Set up gunicorn's handlers as usual, then make each of them redact."""
        super().setup(cfg)
        redact_handlers(self.error_log)
        redact_handlers(self.access_log)

"""The OpenAPI document as a contract: every answer a test gets is checked against it.

conftest.py makes every Flask test client of the suite a CheckedClient, so each response any test
receives, on any route, must be one the document describes: a documented status for that route and
method, its documented headers, a documented media type, and a body that validates against the
documented schema, held closed (a field the document does not list fails). A 405 goes to the
document's `default` answer; a 500 passes only as secret_key_mismatch, the one the service means to
send: any other 500 is a bug, and fails whichever test met it.
"""
from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator, FormatChecker
from werkzeug.test import TestResponse
from werkzeug.wrappers import Response

from status_service import create_app, openapi
from status_service.settings import Settings

_FORMATS = FormatChecker()
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})")


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """An RFC 3339 time with its zone, as the service writes them (2026-01-31T12:00:00Z)."""
    return not isinstance(value, str) or (_RFC3339.fullmatch(value) is not None and datetime.fromisoformat(value) is not None)


class ContractError(AssertionError):
    """An answer the OpenAPI document does not describe."""


def closed(node: Any) -> Any:
    """Return a schema with every object that lists its properties closed to others, and patterns ending at the end.

    A pattern's final $ means the end of the text in JSON Schema; Python's re, which checks them
    here, also lets a final newline through it.
    """
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: closed(value) for key, value in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if isinstance(out.get("pattern"), str) and out["pattern"].endswith("$"):
        out["pattern"] = out["pattern"][:-1] + "\\Z"
    return out


def _pattern(template: str) -> re.Pattern[str]:
    """Return a path template as a pattern: a parameter is one segment ({filename}, of a static asset, any path)."""
    parts = re.split(r"(\{[a-z_]+\})", template)
    return re.compile("^" + "".join((".+" if p == "{filename}" else "[^/]+") if p.startswith("{") else re.escape(p) for p in parts) + "$")


class Contract:
    """The document, its paths as patterns, and a validator per schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.components = closed(document["components"])
        # Literal segments before parameters: /webhooks/dead is not /webhooks/{webhook_id}.
        templates = sorted(document["paths"], key=lambda p: (p.count("{"), p))
        self.paths = [(_pattern(p), p) for p in templates]
        self._validators: dict[str, Draft202012Validator] = {}

    def operation(self, method: str, path: str) -> tuple[str | None, dict[str, Any] | None]:
        """Return the path template and operation that serve method on path (None, None: no path; template, None: no method)."""
        method = "get" if method.upper() == "HEAD" else method.lower()
        matched = [template for pattern, template in self.paths if pattern.match(path)]
        for template in matched:
            if method in self.document["paths"][template]:
                return template, self.document["paths"][template][method]
        return (matched[0] if matched else None), None

    def check(self, method: str, path: str, response: Response) -> str | None:
        """Return the path template that answered; raise ContractError unless the document describes this answer."""
        status = response.status_code
        template, operation = self.operation(method, path)
        where = f"{method} {path} -> {status}"
        if status == 500:
            self._body(self.default, response, where, method)
            if json.loads(response.get_data())["error"]["code"] != "secret_key_mismatch":
                raise ContractError(f"{where}: a 500 the service does not mean to send (a bug)")
            return template
        if method.upper() == "OPTIONS" and template is not None:
            if status != 200 or "Allow" not in response.headers:
                raise ContractError(f"{where}: OPTIONS answers 200 with Allow")
            return template
        if operation is None:
            if (template is None and status == 404) or (template is not None and status == 405):
                self._body(self.default, response, where, method)
                return template
            raise ContractError(f"{where}: no documented operation serves it")
        responses = operation["responses"]
        answer = responses.get(str(status))
        if answer is None:
            if status != 405:
                raise ContractError(f"{where}: status {status} is not documented for {method.upper()} {template}")
            answer = responses["default"]
        self._body(answer, response, where, method)
        return template

    @property
    def default(self) -> dict[str, Any]:
        """The answer every route gives for what it does not list: the error envelope."""
        return self.document["paths"]["/livez"]["get"]["responses"]["default"]

    def _body(self, answer: dict[str, Any], response: Response, where: str, method: str) -> None:
        for name, header in answer.get("headers", {}).items():
            if header.get("required") and name not in response.headers:
                raise ContractError(f"{where}: the documented header {name} is missing")
        data = response.get_data()
        content = answer.get("content")
        if not content:
            if data:
                raise ContractError(f"{where}: documented without a body, but it has {len(data)} bytes")
            return
        media = response.mimetype
        found = next((schema for name, schema in content.items() if name.split(";")[0].strip() == media), None)
        if found is None:
            raise ContractError(f"{where}: {media} is not among the documented {sorted(content)}")
        if method.upper() == "HEAD":
            return
        if not data:
            raise ContractError(f"{where}: an empty {media} body")
        if media.endswith("json"):
            errors = sorted(self.validator(found["schema"]).iter_errors(json.loads(data)), key=lambda e: list(e.absolute_path))
            if errors:
                shown = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in errors[:5])
                raise ContractError(f"{where}: the body does not match the document: {shown}")
        elif media == "text/html" and not data.lstrip().lower().startswith(b"<!doctype html"):
            raise ContractError(f"{where}: a text/html body that is no HTML page")
        elif media == "image/svg+xml" and not data.lstrip().startswith(b"<svg"):
            raise ContractError(f"{where}: an image/svg+xml body that is no SVG")

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        """Return a validator of a schema of the document (held closed), made once."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            whole = {**closed(copy.deepcopy(schema)), "components": self.components}
            self._validators[key] = Draft202012Validator(whole, format_checker=_FORMATS)
        return self._validators[key]


@lru_cache(maxsize=1)
def contract() -> Contract:
    """Return the contract of the app as any settings build it: its routes do not depend on them."""
    app = create_app(Settings(secret_keys=Fernet.generate_key().decode(), redis_url="redis://127.0.0.1:1/0"))
    return Contract(openapi.build(app))


class CheckedClient(FlaskClient):
    """A Flask test client that checks every answer against the OpenAPI document, and notes what it got."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[tuple[str | None, str, int, str]] = set()  # (path template, method, status, media type)

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:  # type: ignore[override]
        response = super().open(*args, **kwargs)
        request = response.request
        template = contract().check(request.method, request.path, response)
        self.seen.add((template, request.method.lower(), response.status_code, response.mimetype))
        return response
